#!/bin/sh
# lab STAND-IN for Istio's istio-start.sh: no traffic capture here, only the agent.
exec /usr/bin/python3 /usr/local/bin/pilot-agent
