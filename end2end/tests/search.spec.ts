// Message search as people use it: a word typed in the search panel finds a message in a
// room the person is in, with the word marked; clicking the result opens the room at that
// message (loading it and its neighbours when it is far back) and marks it.
import { test, expect, person, guestToken, rawSteps } from './fixtures';
import type { Page } from '@playwright/test';


async function say(page: Page, text: string) {
  const box = page.getByRole('textbox', { name: 'Message #general' });
  await box.fill(text);
  await box.press('Enter');
}

// Sixty messages in a row are not what this file tests: a burst that large would meet the
// send rate limit and spend the test's time waiting out refusals (it ran past the timeout in CI).
test.use({ serverEnv: { HUDDLE_MSG_BURST: '100' } });

/** Posts `count` filler messages to `general` as the guest `name`, over a WebSocket of its own:
 * typed one by one in a busy browser they took 30-50 s, close to the test's timeout. */
async function postFiller(url: string, name: string, count: number) {
  const token = await guestToken(url, name);
  const [directory] = await rawSteps(url, token, [{ frame: { type: 'list_rooms' }, answer: 'room_directory' }]);
  const general = (directory.rooms as { id: number; name: string }[]).find((r) => r.name === 'general')!.id;
  const sends = Array.from({ length: count }, (_, i) => ({
    frame: { type: 'send', room: general, client_msg_id: `filler-${i}`, text: `filler message ${i}` },
    answer: 'ack',
  }));
  await rawSteps(url, token, sends);
}

test('search finds a message, marks the words, and opens the room at it', async ({ browser, server }, testInfo) => {
  const ada = await person(browser, server.url, 'Ada');
  await say(ada, 'The deployment checklist is in the wiki');
  // Enough later messages that the result is not on the first page a newcomer loads.
  await postFiller(server.url, 'Bo', 60);
  const log = (page: Page) => page.getByRole('log', { name: 'Messages in general' });
  await expect(log(ada).getByText('filler message 59')).toBeVisible();
  await expect(log(ada).locator('.message.pending')).toHaveCount(0);

  const lin = await person(browser, server.url, 'Lin');
  await expect(log(lin).getByText('filler message 59')).toBeVisible();
  await expect(log(lin).getByText('The deployment checklist is in the wiki')).toHaveCount(0);

  await lin.getByRole('button', { name: 'Search messages' }).click();
  const panel = lin.getByRole('complementary', { name: 'Search' });
  await panel.getByRole('searchbox', { name: 'Search messages' }).fill('deploy check');
  await panel.getByRole('searchbox', { name: 'Search messages' }).press('Enter');
  const results = panel.getByRole('list', { name: 'Search results' });
  await expect(results.getByRole('listitem')).toHaveCount(1);
  await expect(panel.getByRole('status')).toHaveText('1 result for “deploy check”');
  await expect(results.locator('mark')).toHaveText(['deployment', 'checklist']);
  await lin.screenshot({ path: testInfo.outputPath('search-desktop.png') });

  await results.getByRole('button', { name: /Ada in # general: The deployment checklist/ }).click();
  const found = log(lin).locator('.message.highlighted');
  await expect(found).toHaveText(/The deployment checklist is in the wiki/);
  await expect(found).toBeInViewport();
  // Between the opened window and the newest messages, a hole the person can fill.
  const newer = log(lin).getByRole('button', { name: 'Load newer messages' });
  await expect(newer).toHaveCount(1);
  await newer.click();
  await expect(newer).toHaveCount(0);
  await expect(log(lin).getByText('filler message 30')).toHaveCount(1);
  await lin.screenshot({ path: testInfo.outputPath('search-opened.png') });

  // Nothing matches: said so.
  await panel.getByRole('searchbox', { name: 'Search messages' }).fill('zebra');
  await panel.getByRole('searchbox', { name: 'Search messages' }).press('Enter');
  await expect(panel.getByRole('status')).toHaveText('No messages match “zebra”.');
});

test('search works on a phone and gets out of the way when a result is opened', async ({ browser, server }, testInfo) => {
  const ada = await person(browser, server.url, 'Ada', { width: 390, height: 844 });
  await say(ada, 'lunch at the usual place');
  await expect(ada.locator('.message.pending')).toHaveCount(0);
  await ada.getByRole('button', { name: 'Search messages' }).click();
  const panel = ada.getByRole('complementary', { name: 'Search' });
  await panel.getByRole('searchbox', { name: 'Search messages' }).fill('lunch');
  await panel.getByRole('button', { name: 'Search', exact: true }).click();
  await expect(panel.getByRole('list', { name: 'Search results' }).getByRole('listitem')).toHaveCount(1);
  await ada.screenshot({ path: testInfo.outputPath('search-phone.png') });
  await panel.getByRole('button', { name: /lunch at the usual place/ }).click();
  await expect(panel).toBeHidden();
  await expect(ada.locator('.message.highlighted')).toBeInViewport();
});
