#!/usr/bin/env node
// Ask camskeyd for phone numbers' encryption public keys (Node standard library only).
//
//   CAMSKEYD_URL=http://127.0.0.1:8080 node get_key.js 8613912345678 [MORE ...]
//
// A timeout longer than camskeyd's wait limit; on 503 wait Retry-After seconds and
// try again (a few times); keep the ETag and revalidate with If-None-Match (304:
// the copy you hold is still the key).
'use strict';
const http = require('http');

const BASE = new URL(process.env.CAMSKEYD_URL || 'http://127.0.0.1:8080');
const TIMEOUT_MS = 15000;
const ATTEMPTS = 4;

function once(phone, etag) {
	return new Promise((resolve, reject) => {
		const req = http.get({
			host: BASE.hostname, port: BASE.port || 80,
			path: `/v1/phone-numbers/${phone}/encryption-public-key`,
			headers: etag ? { 'If-None-Match': etag } : {},
			timeout: TIMEOUT_MS,
		}, (res) => {
			let body = '';
			res.setEncoding('utf8');
			res.on('data', (c) => { body += c; });
			res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
		});
		req.on('timeout', () => req.destroy(new Error('timed out')));
		req.on('error', reject);
	});
}

async function getKey(phone, etag) {
	for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
		const r = await once(phone, etag);
		if (r.status === 304)
			return { status: 304, etag };
		const doc = r.body ? JSON.parse(r.body) : {};
		if (r.status === 200)
			return { status: 200, etag: r.headers.etag, doc };
		if (r.status === 503 && attempt < ATTEMPTS) {
			const wait = parseInt(r.headers['retry-after'] || '1', 10);
			console.log(`${phone}: ${doc.Code}, retrying after ${wait} s`);
			await new Promise((ok) => setTimeout(ok, wait * 1000));
			continue;
		}
		throw new Error(`${phone}: HTTP ${r.status} ${doc.Code}: ${doc.Message}`);
	}
	throw new Error(`${phone}: no answer after ${ATTEMPTS} attempts`);
}

(async () => {
	for (const phone of process.argv.slice(2)) {
		const got = await getKey(phone);
		console.log(`${phone}: ${got.doc.Data.EncryptionPublicKeyStatus} key, ETag ${got.etag}`);
		console.log(got.doc.Data.EncryptionPublicKey);
		const again = await getKey(phone, got.etag);
		console.log(`${phone}: revalidated: ${again.status === 304 ? 'unchanged (304)' : 'changed'}`);
	}
})().catch((e) => { console.error(e.message); process.exit(1); });
