// Losing the connection loses nothing: offline sends wait in a persistent outbox, survive a
// reload, and arrive exactly once; a server restart is ridden out by both sides.
import { test, expect, guestToken, rawSteps } from './fixtures';
import type { Browser, Page } from '@playwright/test';

async function person(browser: Browser, url: string, name: string): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, reducedMotion: 'reduce' });
  const page = await context.newPage();
  await page.goto(url);
  const dialog = page.getByRole('dialog', { name: 'Welcome to Huddle' });
  await dialog.getByLabel('Display name').fill(name);
  await dialog.getByRole('button', { name: 'Start chatting' }).click();
  await expect(page.getByRole('status')).toHaveText('Connected');
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('# general');
  return page;
}

const composer = (page: Page) => page.getByRole('textbox', { name: 'Message #general' });
const log = (page: Page) => page.getByRole('log', { name: 'Messages in general' });

async function say(page: Page, text: string) {
  await composer(page).fill(text);
  await composer(page).press('Enter');
}

/** Texts of the text messages in the log, in order. */
async function texts(page: Page): Promise<string[]> {
  return log(page).locator('.message .message-text').allTextContents();
}

test('offline sends stay pending across a reload and arrive once, in order', async ({ browser, server }, testInfo) => {
  const ada = await person(browser, server.url, 'Ada');
  const lin = await person(browser, server.url, 'Lin');

  // Block Ada's WebSocket (pages still load) and go offline.
  let blocked = true;
  await ada.routeWebSocket(/\/ws$/, (ws) => {
    if (blocked) ws.close();
    else ws.connectToServer();
  });
  await ada.context().setOffline(true);
  // Chromium's offline emulation leaves open WebSockets alone, so deliver the browser's
  // 'offline' event the way a real network loss would; the app drops its socket on it.
  await ada.evaluate(() => window.dispatchEvent(new Event('offline')));
  await expect(ada.getByRole('status')).toHaveText(/Offline|Disconnected/);

  for (const text of ['one', 'two', 'three']) await say(ada, text);
  await expect(log(ada).getByRole('img', { name: 'Sending' })).toHaveCount(3);
  await ada.screenshot({ path: testInfo.outputPath('offline-pending.png') });

  // Reload while the socket is still blocked: the pending messages come back from storage.
  await ada.context().setOffline(false);
  await ada.reload();
  await expect(log(ada).getByRole('img', { name: 'Sending' })).toHaveCount(3);
  await expect(ada.getByRole('status')).not.toHaveText('Connected');

  // Back online: they are sent with their original ids, and turn to sent.
  blocked = false;
  await ada.getByRole('button', { name: 'Retry now' }).click();
  await expect(ada.getByRole('status')).toHaveText('Connected');
  await expect(log(ada).getByRole('img', { name: 'Sending' })).toHaveCount(0);
  await expect(log(lin).getByText('three')).toBeVisible();
  expect(await texts(lin)).toEqual(['one', 'two', 'three']);
  expect(await texts(ada)).toEqual(['one', 'two', 'three']);
});

test('both sides ride out a server restart and messages sent meanwhile arrive once', async ({ browser, server }) => {
  const ada = await person(browser, server.url, 'Ada');
  const lin = await person(browser, server.url, 'Lin');
  await say(ada, 'before');
  await expect(log(lin).getByText('before')).toBeVisible();

  const port = server.port;
  expect(await server.stop()).toBe(0);
  await expect(ada.getByRole('status')).toHaveText(/Disconnected/);
  await expect(lin.getByRole('status')).toHaveText(/Disconnected/);
  await say(ada, 'during from Ada');
  await say(lin, 'during from Lin');

  await server.start(port);
  await expect(ada.getByRole('status')).toHaveText('Connected', { timeout: 30_000 });
  await expect(lin.getByRole('status')).toHaveText('Connected', { timeout: 30_000 });
  for (const page of [ada, lin]) {
    await expect(log(page).getByText('during from Ada')).toBeVisible();
    await expect(log(page).getByText('during from Lin')).toBeVisible();
    await expect(log(page).getByRole('img', { name: 'Sending' })).toHaveCount(0);
    const seen = await texts(page);
    expect(seen.filter((t) => t.startsWith('during')).sort()).toEqual(['during from Ada', 'during from Lin']);
    expect(seen.filter((t) => t === 'before')).toHaveLength(1);
  }
});

test('a refused message shows why, survives a reload, can be retried once the cause is fixed, or discarded', async ({ browser, server }, testInfo) => {
  const ada = await person(browser, server.url, 'Ada');
  const lin = await person(browser, server.url, 'Lin');

  // Queue three messages while the server is down, then bring it back with a lower length
  // limit: the two long ones are refused on flush, the short one goes through.
  const port = server.port;
  expect(await server.stop()).toBe(0);
  await expect(ada.getByRole('status')).toHaveText(/Disconnected/);
  const keep = 'Fine when typed, but longer than the new limit: keep it.';
  const drop = 'Fine when typed, but longer than the new limit: drop it.';
  for (const text of [keep, 'short one', drop]) await say(ada, text);
  server.env.HUDDLE_MAX_MESSAGE_CHARS = '40';
  await server.start(port);
  await expect(ada.getByRole('status')).toHaveText('Connected', { timeout: 30_000 });

  const refusals = log(ada).getByRole('alert');
  await expect(refusals).toHaveCount(2);
  await expect(refusals.first()).toHaveText(/Not sent: Message is 56 characters long; the limit is 40\./);
  await expect(log(lin).getByText('short one')).toBeVisible();
  await ada.screenshot({ path: testInfo.outputPath('refused-messages.png') });

  // Discard one; a reload brings back the other, still refused, but not the discarded one.
  await log(ada).locator('.message', { hasText: drop }).getByRole('button', { name: 'Discard' }).click();
  await expect(log(ada).getByText(drop)).toHaveCount(0);
  await ada.reload();
  await expect(ada.getByRole('status')).toHaveText('Connected');
  await expect(log(ada).getByText('short one')).toBeVisible();
  await expect(refusals).toHaveCount(1);
  await expect(log(ada).locator('.message', { hasText: keep }).getByRole('alert')).toBeVisible();
  await expect(log(ada).getByText(drop)).toHaveCount(0);

  // The operator raises the limit again: Retry sends it under its original id, once.
  expect(await server.stop()).toBe(0);
  delete server.env.HUDDLE_MAX_MESSAGE_CHARS;
  await server.start(port);
  await expect(ada.getByRole('status')).toHaveText('Connected', { timeout: 30_000 });
  await log(ada).locator('.message', { hasText: keep }).getByRole('button', { name: 'Retry' }).click();
  await expect(refusals).toHaveCount(0);
  await expect(log(ada).getByRole('img', { name: 'Sending' })).toHaveCount(0);
  await expect(log(lin).getByText(keep)).toBeVisible();
  expect(await texts(lin)).toEqual(['short one', keep]);
  expect(await texts(ada)).toEqual(['short one', keep]);
});

test.describe('with an attempt cap', () => {
  test.use({
    serverEnv: { HUDDLE_RECONNECT_BASE_MS: '50', HUDDLE_RECONNECT_CAP_MS: '200', HUDDLE_RECONNECT_MAX_ATTEMPTS: '3' },
  });

  test('the page stops retrying after the configured attempts and reconnects on "Retry now"', async ({ browser, server }, testInfo) => {
    const ada = await person(browser, server.url, 'Ada');
    const settings = JSON.parse((await ada.locator('meta[name="huddle-client"]').getAttribute('content'))!);
    expect(settings).toEqual({ reconnect_base_ms: 50, reconnect_cap_ms: 200, reconnect_max_attempts: 3, allow_guests: true });

    const port = server.port;
    expect(await server.stop()).toBe(0);
    const status = ada.locator('.conn-status');
    await expect(status).toHaveAttribute('data-state', 'offline');
    await expect(ada.getByRole('status')).toHaveText("Offline — can't reach the server");
    await say(ada, 'typed while given up');
    await expect(log(ada).getByRole('img', { name: 'Sending' })).toHaveCount(1);
    await ada.screenshot({ path: testInfo.outputPath('gave-up.png') });

    await server.start(port);
    await ada.getByRole('button', { name: 'Retry now' }).click();
    await expect(ada.getByRole('status')).toHaveText('Connected');
    await expect(log(ada).getByRole('img', { name: 'Sending' })).toHaveCount(0);
    expect(await texts(ada)).toEqual(['typed while given up']);
  });
});

test.describe('with a tight request budget', () => {
  test.use({ serverEnv: { HUDDLE_REQUEST_RATE_PER_S: '2', HUDDLE_REQUEST_BURST: '3' } });

  test('rooms whose subscribe was refused for now are subscribed again, so their news arrives', async ({ browser, server }) => {
    // Busy signs up in the browser's context (the session cookie) and belongs to four more
    // rooms, each made over a raw connection of its own.
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, reducedMotion: 'reduce' });
    const page = await context.newPage();
    const signUp = await page.request.post(`${server.url}/api/guest`, { data: { name: 'Busy' } });
    const { token } = await signUp.json();
    const names = ['alpha', 'beta', 'delta', 'gamma'];
    const ids: Record<string, number> = {};
    for (const name of names) {
      const [joined] = await rawSteps(server.url, token, [{ frame: { type: 'create_room', name }, answer: 'joined' }]);
      ids[name] = (joined.room as { id: number }).id;
    }

    // The app subscribes five rooms at once against a burst of three (after hello): some are
    // refused with rate_limited and subscribed again after the wait the server names.
    await page.goto(server.url);
    await expect(page.getByRole('status')).toHaveText(/Connected/);
    const nav = page.getByRole('navigation', { name: 'Rooms and direct messages' });
    await nav.getByRole('button', { name: /# general/ }).click();
    await expect(page.getByRole('heading', { level: 1 })).toHaveText('# general');

    // News in every other room shows as an unread badge: each room is received live.
    const poster = await guestToken(server.url, 'Poster');
    for (const name of names) {
      await rawSteps(server.url, poster, [
        { frame: { type: 'join', room: ids[name] }, answer: 'joined' },
        { frame: { type: 'send', room: ids[name], client_msg_id: `in-${name}`, text: `news in ${name}` }, answer: 'ack' },
      ]);
    }
    await expect(nav.getByLabel('1 unread')).toHaveCount(names.length, { timeout: 15_000 });
    await context.close();
  });
});
