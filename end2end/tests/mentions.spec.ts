// Mentions and notifications as people use them: `@` completes names from the room,
// a mention is marked for the person mentioned and counted in its own sidebar badge, the
// Mentions view lists it, and notifications (asked for only after a click) announce
// mentions while the tab is hidden; the tab title carries the unread count.
import { test, expect, person } from './fixtures';
import type { Page } from '@playwright/test';

/** Replaces the Notification API with a recorder, and lets the test hide the tab. */
async function stubNotifications(page: Page) {
  await page.addInitScript(() => {
    const w = window as any;
    w.__notes = [];
    w.__hidden = false;
    Object.defineProperty(document, 'hidden', { get: () => w.__hidden === true });
    w.Notification = class {
      static permission = 'default';
      static requestPermission() {
        w.Notification.permission = 'granted';
        return Promise.resolve('granted');
      }
      onclick: unknown = null;
      constructor(title: string, options: { body?: string }) {
        w.__notes.push({ title, body: options?.body });
      }
    };
  });
  await page.reload();
  await expect(page.getByRole('status').first()).toHaveText(/Connected/);
}

test('a mention completes, is marked and counted, listed, and notifies while hidden', async ({ browser, server }, testInfo) => {
  const lin = await person(browser, server.url, 'Lin Chen');
  await stubNotifications(lin);
  const ada = await person(browser, server.url, 'Ada');
  // Lin looks at another room, so general's messages arrive unread.
  await lin.getByRole('button', { name: 'Create room' }).click();
  const dialog = lin.getByRole('dialog', { name: 'Create a room' });
  await dialog.getByLabel('Room name').fill('side');
  await dialog.getByRole('button', { name: 'Create' }).click();
  await expect(lin.getByRole('heading', { level: 1 })).toHaveText('# side');

  // Ada types "@Li": the menu offers Lin Chen; Enter inserts the whole name.
  const box = ada.getByRole('textbox', { name: 'Message #general' });
  await box.pressSequentially('hey @Li');
  const menu = ada.getByRole('listbox', { name: 'Mention someone' });
  await expect(menu.getByRole('option', { name: 'Lin Chen' })).toBeVisible();
  await ada.screenshot({ path: testInfo.outputPath('mention-menu.png') });
  await box.press('Enter');
  await expect(menu).toBeHidden();
  await expect(box).toHaveValue('hey @Lin Chen ');
  await box.pressSequentially('can you review?');
  await box.press('Enter');
  await expect(box).toHaveValue('');

  // Lin: a mention badge on general and on Mentions, apart from the unread count.
  const rooms = lin.getByRole('navigation', { name: 'Rooms and direct messages' });
  await expect(rooms.getByLabel('1 mentions')).toHaveText('@1');
  await expect(rooms.getByRole('button', { name: /^Mentions/ })).toContainText('1');
  await expect(lin).toHaveTitle(/^\(\d+\) Huddle$/);

  await rooms.getByRole('button', { name: /^Mentions/ }).click();
  const panel = lin.getByRole('complementary', { name: 'Search' });
  await expect(panel.getByRole('heading', { name: 'Mentions' })).toBeVisible();
  await expect(panel.getByRole('listitem')).toHaveCount(1);
  await expect(panel.locator('mark')).toHaveText('@Lin Chen');
  await panel.getByRole('button', { name: /hey @Lin Chen can you review/ }).click();
  await expect(lin.getByRole('heading', { level: 1 })).toHaveText('# general');
  const message = lin.locator('.message.mentions-me');
  await expect(message.locator('mark.mention')).toHaveText('@Lin Chen');
  await expect(rooms.getByLabel('1 mentions')).toHaveCount(0);
  await expect(lin).toHaveTitle('Huddle');
  await lin.screenshot({ path: testInfo.outputPath('mention-marked.png') });

  // Notifications: nothing is asked until Lin clicks; then mentions notify while hidden.
  expect(await lin.evaluate(() => (window as any).Notification.permission)).toBe('default');
  await lin.getByRole('button', { name: 'Enable notifications' }).click();
  await expect(lin.getByRole('button', { name: 'Enable notifications' })).toBeHidden();
  await lin.evaluate(() => { (window as any).__hidden = true; });
  await box.fill('@lin chen the build is green');
  await box.press('Escape');
  await box.press('Enter');
  await expect.poll(() => lin.evaluate(() => (window as any).__notes)).toEqual([
    { title: 'Ada in #general', body: '@lin chen the build is green' },
  ]);

  // A direct message notifies too, without a mention; a plain room message does not.
  await box.fill('no mention in here');
  await box.press('Enter');
  await expect(ada.getByRole('log', { name: 'Messages in general' }).getByText('no mention in here')).toBeVisible();
  await ada.getByRole('complementary', { name: 'Members' }).getByRole('button', { name: 'Message Lin Chen' }).click();
  const dm = ada.getByRole('textbox', { name: 'Message Lin Chen' });
  await dm.fill('a word in private');
  await dm.press('Enter');
  await expect.poll(() => lin.evaluate(() => (window as any).__notes.map((n: { body: string }) => n.body))).toEqual([
    '@lin chen the build is green',
    'a word in private',
  ]);
  // Shown while visible, nothing notifies.
  await lin.evaluate(() => { (window as any).__hidden = false; });
  await dm.fill('you are looking');
  await dm.press('Enter');
  await expect(lin.getByRole('navigation', { name: 'Rooms and direct messages' }).getByRole('button', { name: /Ada/ })).toBeVisible();
  await ada.getByRole('textbox', { name: 'Message Lin Chen' }).fill('a later one');
  await ada.getByRole('textbox', { name: 'Message Lin Chen' }).press('Enter');
  await lin.getByRole('navigation', { name: 'Rooms and direct messages' }).getByRole('button', { name: /Ada/ }).click();
  await expect(lin.getByRole('log', { name: 'Messages in Ada' }).getByText('a later one')).toBeVisible();
  expect(await lin.evaluate(() => (window as any).__notes.length)).toBe(2);
});
