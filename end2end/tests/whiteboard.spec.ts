// The room whiteboard in real browsers: one person draws with the mouse, another sees the
// pixels change; someone who opens the board later sees the same picture; undo and clear
// reach everyone.
import { test, expect, person } from './fixtures';
import type { Page } from '@playwright/test';


async function joinRoom(page: Page, room: string) {
  const menu = page.getByRole('button', { name: 'Open menu' });
  if (await menu.isVisible()) await menu.click(); // phones: the room list is in a drawer
  await page.getByRole('button', { name: 'Browse rooms' }).click();
  await page.getByRole('dialog', { name: 'Browse rooms' }).getByRole('button', { name: `Join ${room}` }).click();
  await expect(page.getByRole('heading', { level: 1 })).toHaveText(`# ${room}`);
}

const canvas = (page: Page, room: string) => page.getByRole('img', { name: `Whiteboard of ${room}` });

async function openBoard(page: Page, room: string) {
  await page.getByRole('button', { name: 'Whiteboard' }).click();
  await expect(canvas(page, room)).toHaveAttribute('aria-busy', 'false');
}

/** Opacity (0-255) of the canvas pixel at a fraction of its width and height. */
async function ink(page: Page, room: string, fx: number, fy: number): Promise<number> {
  return canvas(page, room).evaluate((el, [fx, fy]) => {
    const c = el as HTMLCanvasElement;
    const x = Math.floor(c.width * fx), y = Math.floor(c.height * fy);
    return c.getContext('2d')!.getImageData(x, y, 1, 1).data[3];
  }, [fx, fy]);
}

/** Drags the mouse across the canvas through the given fractions of its size. */
async function stroke(page: Page, room: string, from: [number, number], to: [number, number]) {
  const box = (await canvas(page, room).boundingBox())!;
  const at = ([fx, fy]: [number, number]) => [box.x + box.width * fx, box.y + box.height * fy] as const;
  await page.mouse.move(...at(from));
  await page.mouse.down();
  for (let i = 1; i <= 20; i++) {
    const t = i / 20;
    await page.mouse.move(...at([from[0] + (to[0] - from[0]) * t, from[1] + (to[1] - from[1]) * t]));
  }
  await page.mouse.up();
}

test('a stroke drawn by one person appears for others, stays for late visitors, and undo and clear reach everyone', async ({ browser, server }, testInfo) => {
  const ada = await person(browser, server.url, 'Ada');
  await ada.getByRole('button', { name: 'Create room' }).click();
  const dialog = ada.getByRole('dialog', { name: 'Create a room' });
  await dialog.getByLabel('Room name').fill('sketch');
  await dialog.getByRole('button', { name: 'Create room' }).click();
  await expect(ada.getByRole('heading', { level: 1 })).toHaveText('# sketch');
  const lin = await person(browser, server.url, 'Lin');
  await joinRoom(lin, 'sketch');

  await openBoard(ada, 'sketch');
  await openBoard(lin, 'sketch');
  expect(await ink(lin, 'sketch', 0.5, 0.5)).toBe(0);

  // Ada draws across the middle; Lin's canvas gets ink there, and sees who is drawing.
  await ada.getByRole('radio', { name: 'Red' }).click();
  await ada.getByRole('radio', { name: 'Thick' }).click();
  await stroke(ada, 'sketch', [0.2, 0.5], [0.8, 0.5]);
  await expect(lin.getByText('Ada is drawing')).toBeVisible();
  await expect.poll(() => ink(lin, 'sketch', 0.5, 0.5)).toBeGreaterThan(0);
  expect(await ink(lin, 'sketch', 0.5, 0.2)).toBe(0);

  // Lin draws a vertical line and takes it back: gone on Ada's screen, Ada's stroke stays.
  await stroke(lin, 'sketch', [0.9, 0.2], [0.9, 0.8]);
  await expect.poll(() => ink(ada, 'sketch', 0.9, 0.35)).toBeGreaterThan(0);
  await lin.getByRole('button', { name: 'Undo' }).click();
  await expect.poll(() => ink(ada, 'sketch', 0.9, 0.35)).toBe(0);
  expect(await ink(ada, 'sketch', 0.5, 0.5)).toBeGreaterThan(0);

  await ada.screenshot({ path: testInfo.outputPath('whiteboard-desktop.png') });

  // Someone who comes later sees the picture, also on a phone-sized screen.
  const cy = await person(browser, server.url, 'Cy', { width: 390, height: 844 });
  await joinRoom(cy, 'sketch');
  await openBoard(cy, 'sketch');
  await expect.poll(() => ink(cy, 'sketch', 0.5, 0.5)).toBeGreaterThan(0);
  await cy.screenshot({ path: testInfo.outputPath('whiteboard-phone.png') });

  // Only the owner may clear this room's board; then every canvas is empty.
  await expect(lin.getByRole('button', { name: 'Clear' })).toHaveCount(0);
  await ada.getByRole('button', { name: 'Clear' }).click();
  for (const page of [ada, lin, cy]) {
    await expect.poll(() => ink(page, 'sketch', 0.5, 0.5)).toBe(0);
  }
});
