#!/usr/bin/env bash
# Installs the real servers the tests run against (Debian packages), when missing.
# The tests start and stop their own instances on loopback ports.
set -euo pipefail
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v promtool >/dev/null || need+=(prometheus)
command -v redis-server >/dev/null || need+=(redis-server)
command -v chromium >/dev/null || need+=(chromium)  # the HTML report is opened in headless Chromium
# Real runtimes for tests/test_runtime_live.py: Node (prom-client from npm), Go with client_golang
# (built offline in GOPATH mode), a JDK for the serial-collector service; taskset for pinning.
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v go >/dev/null || need+=(golang-go)
[ -d /usr/share/gocode/src/github.com/prometheus/client_golang ] || need+=(golang-github-prometheus-client-golang-dev)
command -v javac >/dev/null || need+=(default-jdk-headless)
command -v taskset >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${need[*]} (Debian packages) for the tests" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
node_dir="$(dirname "$0")/../tests/workloads/runtimes/node"
if [ ! -d "$node_dir/node_modules/prom-client" ]; then
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
