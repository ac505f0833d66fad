// The operator console in headless Chromium (run by console.sh against a running
// `agora run` with `agora load` placing orders).
//
//   node console.mjs LINK BASE ADMIN_TOKEN SCREENSHOT_DIR
//
// Signs in through the one-time LINK, checks the code left the address bar, visits
// every page, waits for live data (orders/s > 0 on the overview, an OrderPlaced in
// the event tail, an order's saga timeline), keeps a screenshot of each page, signs
// out, shows the used link is refused, signs in again by pasting a token. Fails on
// any console error or uncaught exception, except the 404s of the SSE and trace
// routes the console probes and falls back from while they do not exist.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [LINK, BASE, TOKEN, OUT] = process.argv.slice(2);
if (!LINK || !BASE || !TOKEN || !OUT) {
  console.error('usage: console.mjs LINK BASE ADMIN_TOKEN SCREENSHOT_DIR');
  process.exit(2);
}
fs.mkdirSync(OUT, { recursive: true });
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'agora-chromium-'));
// a fresh profile (--user-data-dir, which playwright passes for a persistent context)
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1360, height: 900 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let failures = 0;
const ok = (what) => console.log(`ok - ${what}`);
const notOk = (what, why) => { failures++; console.log(`not ok - ${what}: ${why}`); };
const errors = [];
let allow401 = false;
const optional = /\/admin\/(stats|log)\/stream|\/admin\/orders\/[^/]+\/trace/;
try {
  const page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (e) => errors.push(`exception: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const url = (m.location() && m.location().url) || '';
    if (/status of 404/.test(m.text()) && optional.test(url)) return; // probed, falls back
    if (allow401 && /status of 401/.test(m.text()) && /\/admin\/console\/session/.test(url)) return;
    errors.push(`console: ${m.text()} (${url})`);
  });
  const step = async (what, fn) => {
    try { await fn(); ok(what); } catch (e) { notOk(what, e.message.split('\n')[0]); }
  };
  const shot = (name) => page.screenshot({ path: path.join(OUT, `console-${name}.png`), fullPage: false });
  const number = async (sel) => Number((await page.textContent(sel)).replace(/[^0-9.]/g, '') || 'NaN');

  await step('the one-time link signs in and leaves the address bar', async () => {
    await page.goto(LINK);
    await page.waitForSelector('#signed-in', { timeout: 15000 });
    const who = await page.textContent('#signed-in');
    if (!/console/.test(who) || !/admin/.test(who)) throw new Error(who);
    if (page.url().includes('code=')) throw new Error(`still in the URL: ${page.url()}`);
    const stored = await page.evaluate(() => sessionStorage.getItem('agora.console.token'));
    if (!stored || stored.split('.').length !== 3) throw new Error('no token in sessionStorage');
  });
  await step('overview: orders/s becomes > 0 and the charts draw', async () => {
    await page.waitForFunction(() => Number((document.getElementById('orders-per-sec') || {}).textContent) > 0, null, { timeout: 45000 });
    await page.waitForFunction(() => document.getElementById('confirm-latency').textContent.includes('/'), null, { timeout: 30000 });
    if ((await page.$$('svg.chart path')).length < 1) throw new Error('no line drawn');
    if (!(await number('#orders-placed') > 0)) throw new Error('no order accepted');
    // a few more points on the charts for the screenshot (docs/img: CONSOLE_SETTLE_MS=60000)
    await page.waitForTimeout(Number(process.env.CONSOLE_SETTLE_MS || 3000));
    await shot('overview');
  });
  let orderId = null;
  await step('orders: recent orders, then one order with its saga timeline and events', async () => {
    await page.goto(`${BASE}/console#/orders`);
    await page.waitForSelector('#orders-out a[href^="#/orders/"]', { timeout: 15000 });
    await shot('orders');
    orderId = (await page.getAttribute('#orders-out a[href^="#/orders/"]', 'href')).split('/').pop();
    await page.click('#orders-out a[href^="#/orders/"]');
    await page.waitForSelector('text=Saga timeline', { timeout: 15000 });
    await page.waitForFunction(() => !document.getElementById('trace').textContent.includes('loading'), null, { timeout: 15000 });
    await page.waitForSelector('td >> text=OrderPlaced', { timeout: 15000 });
    await page.click('td >> text=OrderPlaced');
    await page.waitForSelector('pre', { timeout: 5000 });
    await shot('order');
  });
  await step('orders: search by order id opens it', async () => {
    await page.goto(`${BASE}/console#/orders`);
    await page.fill('#order-search', orderId);
    await page.press('#order-search', 'Enter');
    await page.waitForURL(new RegExp(`#/orders/${orderId}$`), { timeout: 10000 });
    await page.waitForSelector('text=Saga timeline', { timeout: 15000 });
  });
  await step('sagas: running / failed / compensated lists', async () => {
    await page.goto(`${BASE}/console#/sagas`);
    await page.waitForSelector('h2 >> text=Failed', { timeout: 15000 });
    await page.waitForSelector('h2 >> text=Compensated', { timeout: 15000 });
    await shot('sagas');
  });
  await step('projections: every projection with its lag and a rebuild button', async () => {
    await page.goto(`${BASE}/console#/projections`);
    await page.waitForSelector('td >> text=orders', { timeout: 15000 });
    await page.waitForSelector('td >> text=saga_starter', { timeout: 15000 });
    if ((await page.$$('button >> text=Rebuild')).length < 7) throw new Error('rebuild buttons missing');
    await shot('projections');
  });
  await step('resilience: breakers, upstreams, routes', async () => {
    await page.goto(`${BASE}/console#/resilience`);
    await page.waitForSelector('td >> text=platform', { timeout: 15000 });
    await page.waitForSelector('td >> text=ReserveInventory', { timeout: 15000 });
    await shot('resilience');
  });
  await step('dead letters: the list', async () => {
    await page.goto(`${BASE}/console#/dlq`);
    await page.waitForSelector('main table', { timeout: 15000 });
    await shot('dlq');
  });
  await step('event log: the live tail shows OrderPlaced; one event as JSON; streams', async () => {
    await page.goto(`${BASE}/console#/events`);
    await page.waitForSelector('#tail-mode:not(:empty)', { timeout: 15000 });
    const before = await page.evaluate(() => Number((document.querySelector('#tail td') || {}).textContent || -1));
    await page.waitForFunction((b) => Number((document.querySelector('#tail td') || {}).textContent) > b, before, { timeout: 20000 });
    await page.waitForSelector('#tail td >> text=OrderPlaced', { timeout: 20000 });
    await page.click('#tail td >> text=OrderPlaced');
    await page.waitForSelector('#event-json pre', { timeout: 5000 });
    const j = JSON.parse(await page.textContent('#event-json pre'));
    if (j.type !== 'OrderPlaced' || typeof j.position !== 'number') throw new Error(JSON.stringify(j).slice(0, 200));
    await page.fill('#stream-prefix', 'order-');
    await page.press('#stream-prefix', 'Enter');
    await page.waitForSelector('td >> text=/^order-/', { timeout: 10000 });
    await shot('events');
  });
  await step('a reload keeps the session (sessionStorage); sign-out ends it', async () => {
    await page.reload();
    await page.waitForSelector('#signed-in', { timeout: 10000 });
    await page.click('#sign-out');
    await page.waitForSelector('#token', { timeout: 5000 });
    if (await page.evaluate(() => sessionStorage.getItem('agora.console.token'))) throw new Error('token kept');
  });
  await step('the used link is refused', async () => {
    allow401 = true;
    await page.goto('about:blank');
    await page.goto(LINK);
    await page.waitForSelector('text=did not work', { timeout: 10000 });
    allow401 = false;
    await shot('signin');
  });
  await step('pasting an admin token signs in', async () => {
    await page.fill('#token', TOKEN);
    await page.click('#sign-in');
    await page.waitForSelector('#signed-in', { timeout: 10000 });
  });
  await step('no console errors', async () => {
    if (errors.length) throw new Error(errors.slice(0, 5).join(' | '));
  });
} finally {
  await context.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
console.log(failures ? `${failures} failed` : 'all passed');
process.exit(failures ? 1 : 0);
