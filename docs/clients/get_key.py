#!/usr/bin/env python3
"""Ask camskeyd for phone numbers' encryption public keys (Python standard library only).

    CAMSKEYD_URL=http://127.0.0.1:8080 python3 get_key.py 8613912345678 [MORE ...]

What every caller should do, shown here:
  * a timeout longer than camskeyd's wait limit (max-wait-ms, 5 s by default):
    a cold key may wait for upstream quota;
  * on 503, wait Retry-After seconds and try again (a few times, not at once);
  * keep the key with its ETag and revalidate with If-None-Match: 304 means
    the copy you hold is still the key.
"""
import json
import os
import sys
import time
import urllib.error
import urllib.request

BASE = os.environ.get("CAMSKEYD_URL", "http://127.0.0.1:8080")
TIMEOUT_S = 15      # longer than max-wait-ms plus the upstream's answer time
ATTEMPTS = 4


def get_key(phone, etag=None):
    """(status, etag, doc): status 200 with the envelope, or 304 with doc None."""
    url = "%s/v1/phone-numbers/%s/encryption-public-key" % (BASE, phone)
    for attempt in range(1, ATTEMPTS + 1):
        req = urllib.request.Request(url)
        if etag:
            req.add_header("If-None-Match", etag)
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
                return resp.status, resp.headers.get("ETag"), json.load(resp)
        except urllib.error.HTTPError as e:
            if e.code == 304:
                return 304, etag, None
            doc = json.loads(e.read() or b"{}")
            if e.code == 503 and attempt < ATTEMPTS:
                wait = int(e.headers.get("Retry-After", "1"))
                print("%s: %s, retrying after %d s" % (phone, doc.get("Code"), wait))
                time.sleep(wait)
                continue
            raise RuntimeError("%s: HTTP %d %s: %s" % (phone, e.code, doc.get("Code"),
                                                      doc.get("Message")))
    raise RuntimeError("%s: no answer after %d attempts" % (phone, ATTEMPTS))


def main():
    for phone in sys.argv[1:]:
        status, etag, doc = get_key(phone)
        data = doc["Data"]
        print("%s: %s key, ETag %s" % (phone, data["EncryptionPublicKeyStatus"], etag))
        print(data["EncryptionPublicKey"])
        status, _, _ = get_key(phone, etag)
        print("%s: revalidated: %s" % (phone, "unchanged (304)" if status == 304 else "changed"))


if __name__ == "__main__":
    main()
