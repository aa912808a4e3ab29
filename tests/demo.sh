#!/bin/sh
# make demo: the CAMS simulator and the daemon on loopback, a banner with a
# curl command that works as printed, and a clean stop on Ctrl-C.
set -eu
BUILD=${1:-build}
DEMO_DIR=$(mktemp -d /tmp/camskeyd-demo.XXXXXX)
SIM_PID= DAEMON_PID=

cleanup() {
	trap - INT TERM EXIT
	[ -n "$DAEMON_PID" ] && kill -TERM "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null || true
	[ -n "$SIM_PID" ] && kill -TERM "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null || true
	rm -rf "$DEMO_DIR"
	echo "demo stopped"
}
trap cleanup INT TERM EXIT

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Demo credentials: the simulator accepts exactly these; they open nothing real.
export ALIBABA_CLOUD_ACCESS_KEY_ID=LTAI5tDemoKeyId00001
export ALIBABA_CLOUD_ACCESS_KEY_SECRET=DemoSecretForTheLocalSimulatorOnly

"$BUILD/camsim" --listen 127.0.0.1:0 --keys-dir tests/data/sim-keys >"$DEMO_DIR/sim.out" 2>"$DEMO_DIR/sim.log" &
SIM_PID=$!
i=0
until grep -q "listening on" "$DEMO_DIR/sim.out" 2>/dev/null; do
	i=$((i + 1)); [ $i -gt 100 ] && { echo "simulator did not start"; cat "$DEMO_DIR/sim.log"; exit 1; }
	sleep 0.1
done
SIM_ADDR=$(sed -n 's/^camsim listening on //p' "$DEMO_DIR/sim.out")

PORT=8080
python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1", 8080))' 2>/dev/null || PORT=$(free_port)
"$BUILD/camskeyd" --listen "127.0.0.1:$PORT" --upstream "http://$SIM_ADDR" \
	--cache "$DEMO_DIR/cache.db" &
DAEMON_PID=$!
i=0
until curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
	i=$((i + 1)); [ $i -gt 100 ] && { echo "daemon did not start"; exit 1; }
	kill -0 "$DAEMON_PID" 2>/dev/null || { echo "daemon exited"; exit 1; }
	sleep 0.1
done

cat <<BANNER

  camskeyd demo is running: the daemon on 127.0.0.1:$PORT, the CAMS simulator on $SIM_ADDR.

  Ask for a key (the first call goes upstream, the second is a cache hit):

    curl -i http://127.0.0.1:$PORT/v1/phone-numbers/8613912345678/encryption-public-key

  Also:  curl http://127.0.0.1:$PORT/metrics     curl http://$SIM_ADDR/_sim/stats

  Ctrl-C stops both.

BANNER
wait "$DAEMON_PID"
