"""The suite's pytest plugin lives in fixtures/; this file only loads it (and pytester for self-tests)."""

pytest_plugins = ("fixtures.plugin", "fixtures.world", "fixtures.gating", "fixtures.upgrade",
                  "fixtures.diagnostics", "pytester")
