// Ask camskeyd for phone numbers' encryption public keys (Go standard library only).
//
//	CAMSKEYD_URL=http://127.0.0.1:8080 go run get_key.go 8613912345678 [MORE ...]
//
// A timeout longer than camskeyd's wait limit; on 503 wait Retry-After seconds and
// try again (a few times); keep the ETag and revalidate with If-None-Match (304: the
// copy you hold is still the key).
package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"
)

type envelope struct {
	Code    string
	Message string
	Data    struct {
		EncryptionPublicKey       string
		EncryptionPublicKeyStatus string
	}
}

var client = &http.Client{Timeout: 15 * time.Second} // longer than max-wait-ms

func getKey(base, phone, etag string) (int, string, *envelope, error) {
	for attempt := 1; attempt <= 4; attempt++ {
		req, _ := http.NewRequest("GET", base+"/v1/phone-numbers/"+phone+"/encryption-public-key", nil)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", nil, err
		}
		var doc envelope
		if resp.StatusCode != http.StatusNotModified {
			json.NewDecoder(resp.Body).Decode(&doc)
		}
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusOK:
			return 200, resp.Header.Get("ETag"), &doc, nil
		case resp.StatusCode == http.StatusNotModified:
			return 304, etag, nil, nil
		case resp.StatusCode == http.StatusServiceUnavailable && attempt < 4:
			wait, err := strconv.Atoi(resp.Header.Get("Retry-After"))
			if err != nil || wait < 1 {
				wait = 1
			}
			fmt.Printf("%s: %s, retrying after %d s\n", phone, doc.Code, wait)
			time.Sleep(time.Duration(wait) * time.Second)
		default:
			return resp.StatusCode, "", nil, fmt.Errorf("%s: HTTP %d %s: %s", phone, resp.StatusCode, doc.Code, doc.Message)
		}
	}
	return 0, "", nil, fmt.Errorf("%s: no answer after 4 attempts", phone)
}

func main() {
	base := os.Getenv("CAMSKEYD_URL")
	if base == "" {
		base = "http://127.0.0.1:8080"
	}
	for _, phone := range os.Args[1:] {
		_, etag, doc, err := getKey(base, phone, "")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("%s: %s key, ETag %s\n%s\n", phone, doc.Data.EncryptionPublicKeyStatus, etag, doc.Data.EncryptionPublicKey)
		status, _, _, err := getKey(base, phone, etag)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if status == 304 {
			fmt.Printf("%s: revalidated: unchanged (304)\n", phone)
		} else {
			fmt.Printf("%s: revalidated: changed\n", phone)
		}
	}
}
