// The chat as people use it: two browser contexts (two people) on one real server.
import { test, expect } from './fixtures';
import type { Browser, Page } from '@playwright/test';

/** Opens Huddle in a fresh context and signs in as `name`. */
async function person(browser: Browser, url: string, name: string, viewport = { width: 1280, height: 800 }): Promise<Page> {
  const context = await browser.newContext({ viewport, reducedMotion: 'reduce' });
  const page = await context.newPage();
  await page.goto(url);
  const dialog = page.getByRole('dialog', { name: 'Welcome to Huddle' });
  await expect(dialog).toBeVisible();
  await dialog.getByLabel('Display name').fill(name);
  await dialog.getByRole('button', { name: 'Start chatting' }).click();
  await expect(dialog).toBeHidden();
  await expect(page.getByRole('status')).toHaveText(/Connected/);
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('# general');
  return page;
}

/** The composer of a room, or of a direct conversation with `dm`. */
function composer(page: Page, room = 'general', dm = false) {
  return page.getByRole('textbox', { name: dm ? `Message ${room}` : `Message #${room}` });
}

async function say(page: Page, text: string, room = 'general') {
  await composer(page, room).fill(text);
  await composer(page, room).press('Enter');
}

function log(page: Page, room = 'general') {
  return page.getByRole('log', { name: `Messages in ${room}` });
}

test('two people chat both ways and see each other online', async ({ browser, server }, testInfo) => {
  const ada = await person(browser, server.url, 'Ada');
  const lin = await person(browser, server.url, 'Lin');

  await say(ada, 'Hello Lin!');
  await expect(log(lin).getByText('Hello Lin!')).toBeVisible();
  await say(lin, 'Hi Ada, welcome.\nSecond line.');
  await expect(log(ada).getByText('Hi Ada, welcome.')).toBeVisible();
  await expect(log(ada).locator('.message-text').last()).toHaveText('Hi Ada, welcome.\nSecond line.');

  const members = ada.getByRole('complementary', { name: 'Members' });
  await expect(members.getByText('Lin', { exact: true })).toBeVisible();
  await expect(ada.getByText('2 online', { exact: true })).toBeVisible();
  await expect(log(ada).getByText('Lin joined')).toBeVisible();

  await ada.screenshot({ path: testInfo.outputPath('chat-desktop.png') });
  await lin.close();
  await expect(members.getByText('Lin', { exact: true })).toBeHidden();
  await expect(ada.getByText('1 online', { exact: true })).toBeVisible();
});

test('typing line appears and disappears', async ({ browser, server }) => {
  const ada = await person(browser, server.url, 'Ada');
  const lin = await person(browser, server.url, 'Lin');
  await composer(ada).pressSequentially('thinking');
  await expect(lin.getByText('Ada is typing…')).toBeVisible();
  await composer(ada).press('Enter');
  await expect(lin.getByText('Ada is typing…')).toBeHidden();
  await expect(log(lin).getByText('thinking')).toBeVisible();
});

test('markup in a message is shown as text and never runs', async ({ browser, server }) => {
  const ada = await person(browser, server.url, 'Ada');
  const lin = await person(browser, server.url, 'Lin');
  let dialogs = 0;
  lin.on('dialog', (d) => { dialogs++; void d.dismiss(); });
  const evil = '<img src=x onerror=alert(1)>';
  await say(ada, evil);
  await expect(log(lin).getByText(evil)).toBeVisible();
  expect(await log(lin).locator('img').count()).toBe(0);
  await say(ada, 'link https://example.com/docs here');
  const link = log(lin).getByRole('link', { name: 'https://example.com/docs' });
  await expect(link).toHaveAttribute('rel', 'noopener noreferrer nofollow');
  expect(dialogs).toBe(0);
});

test('create a room, switch rooms, and get unread badges', async ({ browser, server }) => {
  const ada = await person(browser, server.url, 'Ada');
  const lin = await person(browser, server.url, 'Lin');

  // Lin is already browsing when Ada creates the room: the open directory shows it.
  await lin.getByRole('button', { name: 'Browse rooms' }).click();
  const directory = lin.getByRole('dialog', { name: 'Browse rooms' });
  await expect(directory.getByText('# general')).toBeVisible();
  await expect(directory.getByRole('button', { name: 'Join design' })).toHaveCount(0);

  await ada.getByRole('button', { name: 'Create room' }).click();
  const dialog = ada.getByRole('dialog', { name: 'Create a room' });
  await dialog.getByLabel('Room name').fill('design');
  await dialog.getByLabel('Topic (optional)').fill('Pixels and prose');
  await dialog.getByRole('button', { name: 'Create room' }).click();
  await expect(ada.getByRole('heading', { level: 1 })).toHaveText('# design');
  await expect(log(ada, 'design').getByText('Ada created the room')).toBeVisible();

  await directory.getByRole('button', { name: 'Join design' }).click();
  await expect(lin.getByRole('heading', { level: 1 })).toHaveText('# design');

  // Lin goes back to general; Ada posts in design; Lin's sidebar shows an unread badge.
  const nav = lin.getByRole('navigation', { name: 'Rooms and direct messages' });
  await nav.getByRole('button', { name: /# general/ }).click();
  await expect(lin.getByRole('heading', { level: 1 })).toHaveText('# general');
  await say(ada, 'first', 'design');
  await say(ada, 'second', 'design');
  await expect(nav.getByLabel('2 unread')).toBeVisible();
  await nav.getByRole('button', { name: /# design/ }).click();
  await expect(log(lin, 'design').getByText('second')).toBeVisible();
  await expect(nav.getByLabel('2 unread')).toBeHidden();
});

test('direct messages between two people', async ({ browser, server }) => {
  const ada = await person(browser, server.url, 'Ada');
  const lin = await person(browser, server.url, 'Lin');
  await ada.getByRole('complementary', { name: 'Members' }).getByRole('button', { name: 'Message Lin' }).click();
  await expect(ada.getByRole('heading', { level: 1 })).toHaveText('Lin');
  await composer(ada, 'Lin', true).fill('just between us');
  await composer(ada, 'Lin', true).press('Enter');

  const nav = lin.getByRole('navigation', { name: 'Rooms and direct messages' });
  await expect(nav.getByLabel('1 unread')).toBeVisible();
  await nav.getByRole('button', { name: /Ada/ }).click();
  await expect(log(lin, 'Ada').getByText('just between us')).toBeVisible();
});

test('phone layout: drawer, composer, no horizontal scroll', async ({ browser, server }, testInfo) => {
  const ada = await person(browser, server.url, 'Ada', { width: 390, height: 844 });
  await say(ada, 'From my phone');
  await expect(log(ada).getByText('From my phone')).toBeVisible();
  const overflow = await ada.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
  expect(overflow).toBe(false);
  await ada.screenshot({ path: testInfo.outputPath('chat-phone.png') });
  await ada.getByRole('button', { name: 'Open menu' }).click();
  const nav = ada.getByRole('navigation', { name: 'Rooms and direct messages' });
  await expect(nav.getByRole('button', { name: /# general/ })).toBeVisible();
  await ada.screenshot({ path: testInfo.outputPath('chat-phone-drawer.png') });
  await ada.keyboard.press('Escape');
  await expect(nav.getByRole('button', { name: /# general/ })).toBeHidden();
});

test('dark theme screenshot', async ({ browser, server }, testInfo) => {
  const context = await browser.newContext({ colorScheme: 'dark', viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  await page.goto(server.url);
  await page.getByRole('dialog', { name: 'Welcome to Huddle' }).getByLabel('Display name').fill('Night Owl');
  await page.screenshot({ path: testInfo.outputPath('name-picker-dark.png') });
  await page.getByRole('button', { name: 'Start chatting' }).click();
  await expect(page.getByRole('status')).toHaveText(/Connected/);
  await say(page, 'Quiet in here at night');
  await expect(log(page).getByText('Quiet in here at night')).toBeVisible();
  await page.screenshot({ path: testInfo.outputPath('chat-dark.png') });
});

test('a room owner deletes a message (the other browser sees "message deleted") and removes a member', async ({ browser, server }, testInfo) => {
  const ada = await person(browser, server.url, 'Ada');
  const lin = await person(browser, server.url, 'Lin');
  await ada.getByRole('button', { name: 'Create room' }).click();
  const dialog = ada.getByRole('dialog', { name: 'Create a room' });
  await dialog.getByLabel('Room name').fill('team');
  await dialog.getByRole('button', { name: 'Create room' }).click();
  // Browse once the room exists (an open directory would show it only at its next refresh).
  await expect(ada.getByRole('heading', { level: 1 })).toHaveText('# team');
  await lin.getByRole('button', { name: 'Browse rooms' }).click();
  await lin.getByRole('dialog', { name: 'Browse rooms' }).getByRole('button', { name: 'Join team' }).click();
  await expect(lin.getByRole('heading', { level: 1 })).toHaveText('# team');

  await say(lin, 'buy cheap watches', 'team');
  await say(lin, 'sorry, wrong room', 'team');
  const spam = log(ada, 'team').locator('.message', { hasText: 'buy cheap watches' });
  await expect(spam).toBeVisible();
  // Members cannot delete other people's messages; the owner can.
  await expect(log(lin, 'team').locator('.message', { hasText: 'buy cheap watches' }).getByRole('button', { name: 'Delete message' })).toHaveCount(1);
  await say(ada, 'welcome Lin', 'team');
  await expect(log(lin, 'team').locator('.message', { hasText: 'welcome Lin' }).getByRole('button', { name: 'Delete message' })).toHaveCount(0);

  ada.once('dialog', (confirm) => confirm.accept());
  await spam.hover();
  await spam.getByRole('button', { name: 'Delete message' }).click();
  await expect(log(lin, 'team').getByText('message deleted')).toBeVisible();
  await expect(log(lin, 'team').getByText('buy cheap watches')).toHaveCount(0);
  await expect(log(ada, 'team').getByText('message deleted')).toBeVisible();
  await expect(log(lin, 'team').getByText('sorry, wrong room')).toBeVisible();
  await lin.screenshot({ path: testInfo.outputPath('message-deleted.png') });

  // After a reload the deletion is still there (it is an event in the room's sequence).
  await lin.reload();
  const linRooms = lin.getByRole('navigation', { name: 'Rooms and direct messages' });
  await linRooms.getByRole('button', { name: /# team/ }).click();
  await expect(log(lin, 'team').getByText('message deleted')).toBeVisible();
  await expect(log(lin, 'team').getByText('buy cheap watches')).toHaveCount(0);

  // The owner removes Lin from the room: Lin's view of it closes, the room notes it.
  const members = ada.getByRole('complementary', { name: 'Members' });
  ada.once('dialog', (confirm) => confirm.accept());
  await members.getByRole('button', { name: 'Remove Lin from the room' }).click();
  await expect(log(ada, 'team').getByText('Lin was removed by Ada')).toBeVisible();
  await expect(linRooms.getByRole('button', { name: /# team/ })).toHaveCount(0);
});

test('a private room: the owner invites someone online, then edits a message they both see', async ({ browser, server }, testInfo) => {
  const ada = await person(browser, server.url, 'Ada');
  const lin = await person(browser, server.url, 'Lin');
  await ada.getByRole('button', { name: 'Create room' }).click();
  const dialog = ada.getByRole('dialog', { name: 'Create a room' });
  await dialog.getByLabel('Room name').fill('secret');
  await dialog.getByLabel(/Private/).check();
  await dialog.getByRole('button', { name: 'Create room' }).click();
  await expect(ada.getByRole('heading', { level: 1 })).toHaveText('# secret');
  await say(ada, 'the plan', 'secret');

  // Not in the directory for Lin.
  await lin.getByRole('button', { name: 'Browse rooms' }).click();
  const directory = lin.getByRole('dialog', { name: 'Browse rooms' });
  await expect(directory.getByRole('button', { name: 'Join design' })).toHaveCount(0);
  await expect(directory.getByText('# secret')).toHaveCount(0);
  await directory.getByRole('button', { name: 'Close' }).click();

  const members = ada.getByRole('complementary', { name: 'Members' });
  await members.getByRole('button', { name: 'Invite Lin' }).click();
  const linRooms = lin.getByRole('navigation', { name: 'Rooms and direct messages' });
  await linRooms.getByRole('button', { name: /private secret/ }).click();
  await expect(log(lin, 'secret').getByText('the plan')).toBeVisible();
  await expect(members.getByRole('button', { name: 'Invite Lin' })).toHaveCount(0);

  const mine = log(ada, 'secret').locator('.message', { hasText: 'the plan' });
  await mine.hover();
  await mine.getByRole('button', { name: 'Edit message' }).click();
  await mine.getByRole('textbox', { name: 'Edit message' }).fill('the new plan');
  await mine.getByRole('textbox', { name: 'Edit message' }).press('Enter');
  await expect(log(lin, 'secret').locator('.message-text', { hasText: 'the new plan' })).toContainText('(edited)');
  await expect(log(ada, 'secret').locator('.message-text', { hasText: 'the new plan' })).toContainText('(edited)');
  await ada.screenshot({ path: testInfo.outputPath('private-room-edited.png') });
});
