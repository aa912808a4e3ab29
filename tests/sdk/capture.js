#!/usr/bin/env node
// tests/sdk/capture.js -- record exactly what the official SDK puts on the wire.
//
//   node tests/sdk/capture.js OUT.http -- CALL.JS-ARGUMENTS-WITHOUT---endpoint
//
// Listens on 127.0.0.1 (a free port) with a raw `net` server, runs call.js
// against it with the remaining arguments, saves the first request's bytes
// exactly as received (request line, headers, chunked body and all) into
// OUT.http, and answers it with a fixed GetPhoneEncryptionPublicKey envelope.
// Used once to make tests/data/sdk-requests/; test_verify.c parses and
// verifies those files.
'use strict';

const fs = require('fs');
const net = require('net');
const path = require('path');
const { spawn } = require('child_process');

const out = process.argv[2];
const sep = process.argv.indexOf('--');
if (!out || sep < 0) {
	process.stderr.write('usage: node tests/sdk/capture.js OUT.http -- CALL.JS-ARGS\n');
	process.exit(2);
}
const args = process.argv.slice(sep + 1);

// A whole request: headers, then Content-Length bytes or chunks up to 0\r\n\r\n.
function complete(buf) {
	const end = buf.indexOf('\r\n\r\n');
	if (end < 0)
		return false;
	const head = buf.subarray(0, end).toString('latin1').toLowerCase();
	const rest = buf.subarray(end + 4);
	if (/\r\ntransfer-encoding:\s*chunked/.test(head))
		return rest.indexOf('0\r\n\r\n') >= 0;
	const m = /\r\ncontent-length:\s*(\d+)/.exec(head);
	return rest.length >= (m ? Number(m[1]) : 0);
}

const answer = JSON.stringify({
	RequestId: 'CAPTURE-0000', Code: 'OK', Message: 'OK',
	Data: { PhoneNumber: '0', EncryptionPublicKey: 'x', EncryptionPublicKeyStatus: 'VALID' },
});
let saved = false;
const server = net.createServer((sock) => {
	let buf = Buffer.alloc(0);
	sock.on('data', (d) => {
		buf = Buffer.concat([buf, d]);
		if (!complete(buf))
			return;
		if (!saved) {
			fs.writeFileSync(out, buf);
			saved = true;
		}
		sock.end('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n' +
			`Content-Length: ${Buffer.byteLength(answer)}\r\n\r\n${answer}`);
	});
});
server.listen(0, '127.0.0.1', () => {
	const port = server.address().port;
	const child = spawn(process.execPath,
		[path.join(__dirname, 'call.js'), '--endpoint', `127.0.0.1:${port}`, ...args],
		{ stdio: ['ignore', 'inherit', 'inherit'] });
	child.on('exit', (code) => {
		server.close();
		process.exit(saved ? code : 1);
	});
});
