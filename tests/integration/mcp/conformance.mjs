// The MCP conformance suite (@modelcontextprotocol/conformance, the server
// scenarios that apply to a tools-only server) against agora's POST /mcp.
// The suite's runner cannot send an Authorization header, so it talks to a small
// loopback proxy that adds the bearer token an MCP client would be configured
// with and forwards everything else as it came (Host and Origin included: the
// DNS-rebinding scenario is about those). Exits 1 when any scenario has a failed
// check. Env: BASE (agora's http://127.0.0.1:P), TOKEN (a JWT), SRC (repository).
import { execFile } from 'node:child_process';
import http from 'node:http';
import { join } from 'node:path';

const base = new URL(process.env.BASE);
const token = process.env.TOKEN;
const bin = join(process.env.SRC, 'node_modules', '.bin', 'conformance');
// server-initialize, ping, tools-list and dns-rebinding-protection exercise what
// agora serves; the other server scenarios call the suite's own test tools,
// prompts, resources or sampling, which a commerce server does not have.
const scenarios = ['server-initialize', 'ping', 'tools-list', 'dns-rebinding-protection'];

const proxy = http.createServer((req, res) => {
  const headers = { ...req.headers, authorization: `Bearer ${token}` };
  const up = http.request(
    { host: base.hostname, port: base.port, path: req.url, method: req.method, headers },
    (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    },
  );
  up.on('error', () => {
    res.writeHead(502);
    res.end();
  });
  req.pipe(up);
});
await new Promise((ok) => proxy.listen(0, '127.0.0.1', ok));
const url = `http://127.0.0.1:${proxy.address().port}/mcp`;

let failed = 0;
for (const s of scenarios) {
  // asynchronously: the proxy runs on this process's loop
  const out = await new Promise((ok) =>
    execFile(bin, ['server', '--url', url, '--scenario', s], { timeout: 60000 }, (err, stdout, stderr) =>
      ok({ code: err ? (err.code ?? 1) : 0, text: `${stdout}${stderr}` }),
    ),
  );
  const m = /Passed: (\d+)\/(\d+), (\d+) failed/.exec(out.text.replace(/\x1b\[[0-9;]*m/g, ''));
  const ok = out.code === 0 && m && m[3] === '0' && Number(m[1]) > 0 && m[1] === m[2];
  console.log(`${ok ? 'ok' : 'not ok'} - conformance ${s}${m ? `: ${m[1]}/${m[2]} checks passed` : ''}`);
  if (!ok) {
    failed++;
    console.log(out.text);
  }
}
proxy.close();
process.exit(failed ? 1 : 0);
