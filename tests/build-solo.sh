#!/bin/sh
# Build and run one unit test against only the daemon modules it names,
# while the rest of the tree may not build yet (parallel development).
#   tests/build-solo.sh TEST MODULE...     e.g. tests/build-solo.sh signer signer buf mem span
set -eu
t=$1; shift
mkdir -p build/solo
srcs=""
for m in "$@"; do srcs="$srcs daemon/$m.c"; done
cc -std=c17 -Wall -Wextra -Wpedantic -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wformat=2 -Wvla -Wimplicit-fallthrough -Wno-unused-parameter -Wpointer-arith -Wcast-qual -Wundef \
	-O1 -g -fsanitize=address,undefined -D_GNU_SOURCE -iquote daemon -Itests/unit -pthread \
	$(pkg-config --cflags libmicrohttpd libcurl openssl libcjson sqlite3) \
	-o build/solo/test_$t tests/unit/test_$t.c $srcs \
	$(pkg-config --libs libmicrohttpd libcurl openssl libcjson sqlite3) -lm
exec build/solo/test_$t
