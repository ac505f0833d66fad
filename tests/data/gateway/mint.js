// Mint test JWTs with the `jose` npm library (tests/integration/gateway_basic.sh).
// usage: node mint.js OUTDIR HS_SECRET
// Writes rs.pem / es.pem (SPKI public keys) and tokens.json {name: token}.
const jose = require('jose');
const fs = require('fs');
const path = require('path');

async function main() {
  const [out, secret] = process.argv.slice(2);
  const now = Math.floor(Date.now() / 1000);
  const hs = new TextEncoder().encode(secret);
  const rs = await jose.generateKeyPair('RS256');
  const es = await jose.generateKeyPair('ES256');
  fs.writeFileSync(path.join(out, 'rs.pem'), await jose.exportSPKI(rs.publicKey));
  fs.writeFileSync(path.join(out, 'es.pem'), await jose.exportSPKI(es.publicKey));
  const claims = { sub: 'alice', roles: ['admin', 'customer'] };
  const sign = (alg, key, kid, opts = {}) => {
    let j = new jose.SignJWT(opts.claims || claims).setProtectedHeader({ alg, kid, typ: 'JWT' })
      .setIssuer(opts.iss || 'jose-test').setAudience(opts.aud || 'agora').setIssuedAt(now)
      .setExpirationTime(opts.exp || now + 600);
    if (opts.nbf) j = j.setNotBefore(opts.nbf);
    return j.sign(key);
  };
  const t = {};
  t.hs256 = await sign('HS256', hs, 'hs');
  t.rs256 = await sign('RS256', rs.privateKey, 'rs');
  t.es256 = await sign('ES256', es.privateKey, 'es');
  t.expired = await sign('HS256', hs, 'hs', { exp: now - 3600 });
  t.not_yet = await sign('HS256', hs, 'hs', { nbf: now + 3600 });
  t.wrong_iss = await sign('HS256', hs, 'hs', { iss: 'someone-else' });
  t.wrong_aud = await sign('HS256', hs, 'hs', { aud: 'not-agora' });
  // alg none: an unsecured JWT
  t.none = new jose.UnsecuredJWT(claims).setIssuer('jose-test').setAudience('agora')
    .setExpirationTime(now + 600).encode();
  // wrong alg: HS256 signed with the RSA public key PEM as the secret (alg confusion),
  // presented with the RSA key's kid
  const pem = new TextEncoder().encode(await jose.exportSPKI(rs.publicKey));
  t.wrong_alg = await sign('HS256', pem, 'rs');
  // tampered payload: a valid token whose payload says another subject
  const [h, p, s] = t.hs256.split('.');
  const body = JSON.parse(Buffer.from(p, 'base64url').toString());
  body.sub = 'mallory';
  t.tampered = [h, Buffer.from(JSON.stringify(body)).toString('base64url'), s].join('.');
  fs.writeFileSync(path.join(out, 'tokens.json'), JSON.stringify(t));
}
main().catch((e) => { console.error(e); process.exit(1); });
