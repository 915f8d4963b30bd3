"""The suite's pytest plugin lives in fixtures/; this file only loads it (and pytester for self-tests)."""

pytest_plugins = ("fixtures.plugin", "fixtures.world", "fixtures.infra", "fixtures.cluster_side",
                  "fixtures.vm_side", "fixtures.diagnostics", "pytester")
