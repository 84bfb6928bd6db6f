// Files as people send them: an image dropped on the conversation, an image pasted into the
// composer and a document picked with the attach button upload with a progress bar, go out
// with the message, and show in both browsers: images as previews that open full size,
// other files as cards.
import { test, expect, person } from './fixtures';
import type { Page } from '@playwright/test';

/** A small PNG, made in the page (a canvas), as a byte array. */
async function pngBytes(page: Page, colour: string): Promise<number[]> {
  return page.evaluate(async (colour) => {
    const canvas = document.createElement('canvas');
    canvas.width = 120; canvas.height = 80;
    const ctx = canvas.getContext('2d')!;
    ctx.fillStyle = colour; ctx.fillRect(0, 0, 120, 80);
    const blob: Blob = await new Promise((resolve) => canvas.toBlob((b) => resolve(b!), 'image/png'));
    return Array.from(new Uint8Array(await blob.arrayBuffer()));
  }, colour);
}

/** Fires a drop (or a paste) carrying one file on `selector`. */
async function deliver(page: Page, selector: string, kind: 'drop' | 'paste', name: string, bytes: number[]) {
  await page.evaluate(([selector, kind, name, bytes]) => {
    const data = new DataTransfer();
    data.items.add(new File([new Uint8Array(bytes as number[])], name as string, { type: 'image/png' }));
    const target = document.querySelector(selector as string)!;
    const event = kind === 'drop'
      ? new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true })
      : new ClipboardEvent('paste', { clipboardData: data, bubbles: true, cancelable: true });
    target.dispatchEvent(event);
  }, [selector, kind, name, bytes]);
}

/** Waits until every preview image in the log has loaded, and returns how many there are. */
async function loadedPreviews(page: Page): Promise<number> {
  const images = page.getByRole('log', { name: 'Messages in general' }).locator('.attachment-image img');
  await expect.poll(() => images.evaluateAll((all) => all.every((img) => (img as HTMLImageElement).naturalWidth > 0))).toBe(true);
  return images.count();
}

test('dropped, pasted and picked files are sent and shown to everyone', async ({ browser, server }, testInfo) => {
  const ada = await person(browser, server.url, 'Ada');
  const lin = await person(browser, server.url, 'Lin');
  const files = ada.getByRole('list', { name: 'Files to send' });
  const box = ada.getByRole('textbox', { name: 'Message #general' });

  // Drop an image on the conversation; it uploads, then goes with the text.
  await deliver(ada, '.timeline-wrap', 'drop', 'sunset.png', await pngBytes(ada, '#f97316'));
  await expect(files.getByText('Ready')).toBeVisible();
  await box.fill('the view from here');
  await box.press('Enter');
  await expect(files).toBeHidden();

  // Paste an image into the composer and send it without text.
  await deliver(ada, '.composer-input', 'paste', 'pasted.png', await pngBytes(ada, '#2563eb'));
  await expect(files.getByText('pasted.png')).toBeVisible();
  await expect(files.getByText('Ready')).toBeVisible();
  await ada.getByRole('button', { name: 'Send' }).click();

  // Pick a document with the attach button.
  const chooser = ada.waitForEvent('filechooser');
  await ada.getByRole('button', { name: 'Attach files' }).click();
  await (await chooser).setFiles({ name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('meeting notes\n') });
  await expect(files.getByText('Ready')).toBeVisible();
  await box.fill('and the notes');
  await box.press('Enter');

  for (const page of [ada, lin]) {
    const log = page.getByRole('log', { name: 'Messages in general' });
    await expect(log.getByRole('button', { name: 'Open image sunset.png' })).toBeVisible();
    await expect(log.getByRole('button', { name: 'Open image pasted.png' })).toBeVisible();
    await expect(log.getByRole('link', { name: /notes\.txt/ })).toBeVisible();
    expect(await loadedPreviews(page)).toBe(2);
  }
  await lin.screenshot({ path: testInfo.outputPath('files-desktop.png') });

  // An image opens full size and closes with Escape.
  await lin.getByRole('button', { name: 'Open image sunset.png' }).click();
  const viewer = lin.getByRole('dialog', { name: 'Image: sunset.png' });
  await expect(viewer.getByRole('img', { name: 'sunset.png' })).toBeVisible();
  await expect.poll(() => viewer.getByRole('img').evaluate((img) => (img as HTMLImageElement).naturalWidth)).toBe(120);
  await lin.screenshot({ path: testInfo.outputPath('files-viewer.png') });
  await lin.keyboard.press('Escape');
  await expect(viewer).toBeHidden();
});

test('a refused upload says why and can be removed; a phone shows previews', async ({ browser, server }, testInfo) => {
  const ada = await person(browser, server.url, 'Ada', { width: 390, height: 844 });
  const chooser = ada.waitForEvent('filechooser');
  await ada.getByRole('button', { name: 'Attach files' }).click();
  await (await chooser).setFiles({ name: 'tool.exe', mimeType: 'image/png', buffer: Buffer.from('MZ\x90\x00\x03\x00\x00\x00binary') });
  const files = ada.getByRole('list', { name: 'Files to send' });
  await expect(files.getByRole('alert')).toContainText('Only images');
  await expect(ada.getByRole('button', { name: 'Send' })).toBeDisabled();
  await files.getByRole('button', { name: 'Remove tool.exe' }).click();
  await expect(files).toBeHidden();

  await deliver(ada, '.composer-input', 'paste', 'phone.png', await pngBytes(ada, '#16a34a'));
  await expect(files.getByText('Ready')).toBeVisible();
  await ada.getByRole('button', { name: 'Send' }).click();
  expect(await loadedPreviews(ada)).toBe(1);
  await ada.screenshot({ path: testInfo.outputPath('files-phone.png') });
});

test('an upload in progress shows its progress and can be cancelled; nothing is sent', async ({ browser, server }) => {
  const ada = await person(browser, server.url, 'Ada');
  const lin = await person(browser, server.url, 'Lin');
  // Hold the upload on its way so it stays in progress.
  let release: () => void = () => {};
  const held = new Promise<void>((resolve) => { release = resolve; });
  await ada.route('**/api/rooms/*/files*', async (route) => {
    await held;
    await route.abort();
  });
  const chooser = ada.waitForEvent('filechooser');
  await ada.getByRole('button', { name: 'Attach files' }).click();
  await (await chooser).setFiles({ name: 'big.pdf', mimeType: 'application/pdf', buffer: Buffer.from('%PDF-1.7\n' + 'x'.repeat(50_000)) });
  const files = ada.getByRole('list', { name: 'Files to send' });
  await expect(files.getByRole('progressbar', { name: 'Uploading big.pdf' })).toBeVisible();
  // Sending waits for uploads: the button is disabled while one runs.
  const box = ada.getByRole('textbox', { name: 'Message #general' });
  await box.fill('with or without the file');
  await expect(ada.getByRole('button', { name: 'Send' })).toBeDisabled();
  await files.getByRole('button', { name: 'Cancel upload of big.pdf' }).click();
  await expect(files).toBeHidden();
  release();
  await expect(ada.getByRole('button', { name: 'Send' })).toBeEnabled();
  await box.press('Enter');
  const log = lin.getByRole('log', { name: 'Messages in general' });
  await expect(log.getByText('with or without the file')).toBeVisible();
  await expect(log.getByRole('link', { name: /big\.pdf/ })).toHaveCount(0);
});
