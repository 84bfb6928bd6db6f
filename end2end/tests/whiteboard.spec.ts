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

/** Most opacity (0-255) of the canvas pixels within 3 px of a fraction of its width and
 * height (thin lines land a pixel or so off after rounding). */
async function ink(page: Page, room: string, fx: number, fy: number): Promise<number> {
  return canvas(page, room).evaluate((el, [fx, fy]) => {
    const c = el as HTMLCanvasElement;
    const x = Math.floor(c.width * fx), y = Math.floor(c.height * fy);
    const data = c.getContext('2d')!.getImageData(x - 3, y - 3, 7, 7).data;
    let most = 0;
    for (let i = 3; i < data.length; i += 4) most = Math.max(most, data[i]);
    return most;
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

/** Draws a line with synthetic pointer events of `pointerType` (touch or pen), from and to
 * fractions of the canvas. */
async function pointerStroke(page: Page, room: string, pointerType: string, from: [number, number], to: [number, number]) {
  await canvas(page, room).evaluate((el, [pointerType, from, to]) => {
    const box = el.getBoundingClientRect();
    const at = (f: number[]) => ({ clientX: box.left + box.width * f[0], clientY: box.top + box.height * f[1] });
    const fire = (type: string, f: number[]) =>
      el.dispatchEvent(new PointerEvent(type, { pointerId: 7, pointerType: pointerType as string, isPrimary: true, bubbles: true, cancelable: true, button: 0, buttons: 1, pressure: 0.5, ...at(f) }));
    const [a, b] = [from as number[], to as number[]];
    fire('pointerdown', a);
    for (let i = 1; i <= 10; i++) fire('pointermove', [a[0] + (b[0] - a[0]) * i / 10, a[1] + (b[1] - a[1]) * i / 10]);
    fire('pointerup', b);
  }, [pointerType, from, to] as const);
}

/** The canvas' backing store against its size on screen times the device pixel ratio. */
async function sharpness(page: Page, room: string) {
  return canvas(page, room).evaluate((el) => {
    const c = el as HTMLCanvasElement;
    return { backing: c.width, wanted: Math.round(c.clientWidth * window.devicePixelRatio), ratio: window.devicePixelRatio };
  });
}

test('touch and pen draw; the board is sharp on high-DPI screens and survives a resize; an open board is anyone\'s to clear', async ({ browser, server }) => {
  const ada = await person(browser, server.url, 'Ada', { width: 1280, height: 800 }, 2);
  await ada.getByRole('button', { name: 'Create room' }).click();
  const dialog = ada.getByRole('dialog', { name: 'Create a room' });
  await dialog.getByLabel('Room name').fill('jam');
  await dialog.getByLabel('Anyone in the room may clear the whiteboard').check();
  await dialog.getByRole('button', { name: 'Create room' }).click();
  await expect(ada.getByRole('heading', { level: 1 })).toHaveText('# jam');
  const lin = await person(browser, server.url, 'Lin');
  await joinRoom(lin, 'jam');
  await openBoard(ada, 'jam');
  await openBoard(lin, 'jam');

  // Painted at device pixels: twice the CSS width on Ada's 2x screen.
  const sharp = await sharpness(ada, 'jam');
  expect(sharp.ratio).toBe(2);
  expect(sharp.backing).toBe(sharp.wanted);

  // A finger on Lin's screen and a pen on Ada's both draw, live for the other.
  await pointerStroke(lin, 'jam', 'touch', [0.1, 0.3], [0.9, 0.3]);
  await expect.poll(() => ink(ada, 'jam', 0.5, 0.3)).toBeGreaterThan(0);
  await pointerStroke(ada, 'jam', 'pen', [0.3, 0.1], [0.3, 0.9]);
  await expect.poll(() => ink(lin, 'jam', 0.3, 0.6)).toBeGreaterThan(0);

  // A resize refits the backing store and repaints the same picture at the same places.
  await lin.setViewportSize({ width: 900, height: 700 });
  await expect.poll(async () => { const s = await sharpness(lin, 'jam'); return s.backing === s.wanted; }).toBe(true);
  await expect.poll(() => ink(lin, 'jam', 0.5, 0.3)).toBeGreaterThan(0);
  expect(await ink(lin, 'jam', 0.3, 0.6)).toBeGreaterThan(0);
  expect(await ink(lin, 'jam', 0.7, 0.7)).toBe(0);

  // Lin is no moderator, but this room lets anyone clear: empty for both.
  await lin.getByRole('button', { name: 'Clear' }).click();
  for (const page of [ada, lin]) {
    await expect.poll(() => ink(page, 'jam', 0.5, 0.3)).toBe(0);
  }
});
