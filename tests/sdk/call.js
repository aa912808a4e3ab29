#!/usr/bin/env node
// tests/sdk/call.js -- the official Alibaba Cloud Node SDK (@alicloud/cams20200606,
// pinned in package.json) as a test client of camskeyd's drop-in endpoint.
//
//   node tests/sdk/call.js --endpoint 127.0.0.1:PORT --key-id ID --secret-file FILE
//        --phone P [--cust-space-id C] [--signature v3|v1] [--action NAME]
//        [--version V] [--security-token T] [--date-offset-s N] [--replay]
//
// Builds a real Client with protocol HTTP and the given endpoint and credential,
// calls getPhoneEncryptionPublicKey (or, with --action/--version, the same RPC
// shape through the generic callApi of @alicloud/openapi-client), and prints one
// JSON line:
//   {"ok":true,"body":{...}}
//   {"ok":false,"code":"...","statusCode":N,"message":"...","requestId":"..."}
// With --replay the SDK's signed request is sent twice, byte for byte (same
// nonce, date and signature), and the line is {"first":{...},"second":{...}}.
//
//   --signature v3  ACS3-HMAC-SHA256 (the SDK's default)
//   --signature v1  RPC HMAC-SHA1: Config.signatureAlgorithm = 'v2', which makes
//                   openapi-client's callApi take doRPCRequest (SignatureMethod
//                   HMAC-SHA1, SignatureVersion 1.0, Signature in the query)
//   --date-offset-s N  fakes the process clock (Date) N seconds ahead (or back)
//                   so x-acs-date / Timestamp is off by N
//
// Exit status: 0 when a line was printed (whatever the answer), 2 on bad usage,
// 1 when the SDK failed without an HTTP answer (the line then has "code" from
// the SDK or Node, and no statusCode).
'use strict';

const fs = require('fs');
const path = require('path');

function usage(msg) {
	if (msg)
		process.stderr.write(`call.js: ${msg}\n`);
	process.stderr.write('usage: node tests/sdk/call.js --endpoint HOST:PORT --key-id ID ' +
		'--secret-file FILE --phone P [--cust-space-id C] [--signature v3|v1] ' +
		'[--action NAME] [--version V] [--security-token T] [--date-offset-s N] [--replay]\n');
	process.exit(2);
}

function parseArgs(argv) {
	const opt = { signature: 'v3', replay: false };
	const withValue = {
		'--endpoint': 'endpoint', '--key-id': 'keyId', '--secret-file': 'secretFile',
		'--phone': 'phone', '--cust-space-id': 'custSpaceId', '--signature': 'signature',
		'--action': 'action', '--version': 'version', '--security-token': 'securityToken',
		'--date-offset-s': 'dateOffset',
	};
	for (let i = 0; i < argv.length; i++) {
		const a = argv[i];
		if (a === '--replay') {
			opt.replay = true;
		} else if (a === '--help' || a === '-h') {
			usage();
		} else if (withValue[a]) {
			if (i + 1 >= argv.length)
				usage(`${a} needs a value`);
			opt[withValue[a]] = argv[++i];
		} else {
			usage(`unknown argument ${a}`);
		}
	}
	for (const k of ['endpoint', 'keyId', 'secretFile', 'phone'])
		if (opt[k] === undefined)
			usage(`--${k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} is required`);
	if (opt.signature !== 'v3' && opt.signature !== 'v1')
		usage('--signature is v3 or v1');
	if (opt.dateOffset !== undefined && !/^-?[0-9]+$/.test(opt.dateOffset))
		usage('--date-offset-s is an integer');
	return opt;
}

// The process clock, N seconds off: openapi-util's getTimestamp() uses new Date().
function fakeClock(offsetS) {
	const RealDate = Date;
	const offsetMs = offsetS * 1000;
	class FakeDate extends RealDate {
		constructor(...args) {
			if (args.length === 0)
				super(RealDate.now() + offsetMs);
			else
				super(...args);
		}
		static now() {
			return RealDate.now() + offsetMs;
		}
	}
	global.Date = FakeDate;
}

// The tea-typescript instance openapi-client itself uses (its doAction sends).
function teaOfOpenApi() {
	const base = path.dirname(require.resolve('@alicloud/openapi-client'));
	return require(require.resolve('@alicloud/tea-typescript', { paths: [base] }));
}

function errorLine(err) {
	const data = err && err.data ? err.data : {};
	const line = { ok: false, code: err && err.code !== undefined ? String(err.code) : 'Error' };
	if (err && err.statusCode !== undefined)
		line.statusCode = err.statusCode;
	line.message = data.Message !== undefined ? String(data.Message) : String(err && err.message);
	if (data.RequestId !== undefined)
		line.requestId = String(data.RequestId);
	return line;
}

// The same line from a raw answer (the first send of --replay).
function lineFromRaw(statusCode, text) {
	let body;
	try {
		body = JSON.parse(text);
	} catch (e) {
		return { ok: false, code: 'Proxy.UnparsableAnswer', statusCode, message: text.slice(0, 200) };
	}
	if (statusCode >= 200 && statusCode < 300)
		return { ok: true, body };
	const line = { ok: false, code: String(body.Code !== undefined ? body.Code : body.code), statusCode };
	line.message = String(body.Message !== undefined ? body.Message : body.message);
	if (body.RequestId !== undefined)
		line.requestId = String(body.RequestId);
	return line;
}

async function main() {
	const opt = parseArgs(process.argv.slice(2));
	if (opt.dateOffset !== undefined)
		fakeClock(Number(opt.dateOffset));

	const OpenApi = require('@alicloud/openapi-client');
	const Util = require('@alicloud/tea-util');
	const Cams = require('@alicloud/cams20200606');

	let secret;
	try {
		secret = fs.readFileSync(opt.secretFile, 'utf8').replace(/\r?\n$/, '');
	} catch (e) {
		usage(`cannot read ${opt.secretFile}: ${e.message}`);
	}
	const config = new OpenApi.Config({
		accessKeyId: opt.keyId,
		accessKeySecret: secret,
		endpoint: opt.endpoint,
		protocol: 'HTTP',
		readTimeout: 10000,
		connectTimeout: 5000,
	});
	if (opt.securityToken !== undefined)
		config.securityToken = opt.securityToken;
	if (opt.signature === 'v1')
		config.signatureAlgorithm = 'v2';
	const client = new Cams.default(config);

	let first = null;
	if (opt.replay) {
		const tea = teaOfOpenApi();
		const doAction = tea.doAction;
		tea.doAction = async (request, runtime) => {
			const body = request.body && request.body.value ? request.body.value : null;
			if (body)
				request.body = new tea.BytesReadable(body);
			const r1 = await doAction(request, runtime);
			first = lineFromRaw(r1.statusCode, (await r1.readBytes()).toString('utf8'));
			if (body)
				request.body = new tea.BytesReadable(body);
			return doAction(request, runtime); // the identical request again
		};
	}

	let line;
	try {
		let resp;
		if (opt.action !== undefined || opt.version !== undefined) {
			const body = { PhoneNumber: opt.phone };
			if (opt.custSpaceId !== undefined)
				body.CustSpaceId = opt.custSpaceId;
			const params = new OpenApi.Params({
				action: opt.action !== undefined ? opt.action : 'GetPhoneEncryptionPublicKey',
				version: opt.version !== undefined ? opt.version : '2020-06-06',
				protocol: 'HTTPS', pathname: '/', method: 'POST', authType: 'AK',
				style: 'RPC', reqBodyType: 'formData', bodyType: 'json',
			});
			const req = new OpenApi.OpenApiRequest({ body });
			resp = await client.callApi(params, req, new Util.RuntimeOptions({}));
		} else {
			const req = new Cams.GetPhoneEncryptionPublicKeyRequest({ phoneNumber: opt.phone });
			if (opt.custSpaceId !== undefined)
				req.custSpaceId = opt.custSpaceId;
			resp = await client.getPhoneEncryptionPublicKey(req);
		}
		const body = resp && resp.body !== undefined ? resp.body : resp;
		line = { ok: true, body: typeof body.toMap === 'function' ? body.toMap() : body };
	} catch (err) {
		line = errorLine(err);
	}
	if (opt.replay)
		line = { first, second: line };
	process.stdout.write(JSON.stringify(line) + '\n');
	const failed = opt.replay ? line.second : line;
	process.exitCode = failed.ok || failed.statusCode !== undefined ? 0 : 1;
}

main().catch((e) => {
	process.stderr.write(`call.js: ${e && e.stack ? e.stack : e}\n`);
	process.exit(1);
});
