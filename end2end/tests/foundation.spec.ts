// The first screen: loads, hydrates, connects over the real socket, and notices a dead server.
import { test, expect } from './fixtures';

test('page hydrates and shows connected, then disconnected when the server stops', async ({ page, server }, testInfo) => {
  await page.goto(server.url);
  await expect(page).toHaveTitle('Huddle');
  const status = page.getByRole('status');
  await expect(status).toHaveText(/Connected/);
  await page.screenshot({ path: testInfo.outputPath('connected-desktop.png') });

  expect(await server.stop()).toBe(0);
  await expect(status).toHaveText(/Disconnected/);
  await expect(page.getByRole('button', { name: 'Retry now' })).toBeVisible();
  await page.screenshot({ path: testInfo.outputPath('disconnected-desktop.png') });
});

test('first screen fits a phone', async ({ page, server }, testInfo) => {
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(server.url);
  await expect(page.getByRole('status')).toHaveText(/Connected/);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
  expect(overflow).toBe(false);
  await page.screenshot({ path: testInfo.outputPath('connected-phone.png') });
});

test('assets are served compressed', async ({ request, server }) => {
  const html = await (await request.get(server.url)).text();
  const wasm = html.match(/\/pkg\/[^"]+\.wasm/);
  expect(wasm).not.toBeNull();
  const response = await request.get(server.url + wasm![0], { headers: { 'Accept-Encoding': 'br, gzip' } });
  expect(response.status()).toBe(200);
  expect(response.headers()['content-encoding']).toMatch(/br|gzip/);
});
