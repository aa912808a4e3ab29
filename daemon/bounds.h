/*
 * bounds.h -- every compiled-in limit of camskeyd, with a name and a reason.
 * (Not "limits.h": that name would shadow the C library header of the same
 * name for code that includes it with include_next, as GCC's own does.)
 *
 * Inputs are bounded here so that the allocation wrappers in mem.h may abort
 * on failure: nothing a caller, the upstream or a config file sends can make
 * the daemon allocate without bound.
 */
#ifndef CAMSKEYD_BOUNDS_H
#define CAMSKEYD_BOUNDS_H

/* PhoneNumber: digits only, with country code (E.164 is at most 15). */
#define LIMIT_PHONE_MIN_DIGITS 5
#define LIMIT_PHONE_MAX_DIGITS 20

/* CustSpaceId: a token of [A-Za-z0-9._~-], at most this many bytes. */
#define LIMIT_CUST_SPACE_ID_MAX 64

/* A client name (from the config or X-Client-Id). */
#define LIMIT_CLIENT_NAME_MAX 64

/* Request URI and all request headers together (414 / 431 beyond). */
#define LIMIT_URI_MAX_BYTES 2048
#define LIMIT_HEADERS_MAX_BYTES 8192

/* Query arguments in one request: a lookup takes at most three. */
#define LIMIT_QUERY_ARGS_MAX 64

/* Upstream response body: a CAMS answer is about 1 KiB. */
#define LIMIT_UPSTREAM_BODY_MAX_BYTES (64 * 1024)

/* An encryption public key in PEM (RSA 4096 is ~800 bytes). */
#define LIMIT_PEM_MAX_BYTES 8192

/* Upstream RequestId, Code, Message and key status as copied out. */
#define LIMIT_REQUEST_ID_MAX 64
#define LIMIT_CODE_MAX 64
#define LIMIT_MESSAGE_MAX 512
#define LIMIT_STATUS_MAX 32

/* A rendered response envelope (PEM + fields + escaping). */
#define LIMIT_BODY_MAX_BYTES (16 * 1024)

/* Signing: canonical request, string to sign, headers. */
#define LIMIT_CANONICAL_MAX_BYTES 8192

/* Credentials. */
#define LIMIT_ACCESS_KEY_ID_MAX 128
#define LIMIT_ACCESS_KEY_SECRET_MAX 256
#define LIMIT_SECURITY_TOKEN_MAX 8192

/* Config file: lines and whole file. */
#define LIMIT_CONFIG_LINE_MAX 4096
#define LIMIT_CONFIG_FILE_MAX_BYTES (1024 * 1024)

/* SHA-256 in lower-case hex, plus NUL. */
#define LIMIT_SHA256_HEX 65

#endif
