// Accounts in the browser: register, log out, log in (and a wrong password), and a session
// ended from another tab asks to log in again without losing what was typed.
import { test, expect } from './fixtures';
import type { Page } from '@playwright/test';

const welcome = (page: Page) => page.getByRole('dialog', { name: 'Welcome to Huddle' });
const log = (page: Page) => page.getByRole('log', { name: 'Messages in general' });
const composer = (page: Page) => page.getByRole('textbox', { name: 'Message #general' });

async function logIn(page: Page, name: string, password: string) {
  const dialog = welcome(page);
  await dialog.getByLabel('Username').fill(name);
  await dialog.getByLabel('Password').fill(password);
  await dialog.getByRole('button', { name: 'Log in' }).click();
}

test('register, log out, and log in again; a wrong password says so', async ({ page, server }, testInfo) => {
  await page.goto(server.url);
  await welcome(page).getByRole('button', { name: 'Create an account' }).click();
  await welcome(page).getByLabel('Username').fill('Grace');
  await welcome(page).getByLabel('Password').fill('short');
  await welcome(page).getByRole('button', { name: 'Create account' }).click();
  await expect(welcome(page).getByRole('alert')).toHaveText('Passwords need at least 8 characters.');
  await welcome(page).getByLabel('Password').fill('correct horse');
  await page.screenshot({ path: testInfo.outputPath('register.png') });
  await welcome(page).getByRole('button', { name: 'Create account' }).click();
  await expect(page.getByRole('status')).toHaveText('Connected');
  await composer(page).fill('hello from Grace');
  await composer(page).press('Enter');
  await expect(log(page).getByRole('img', { name: 'Sending' })).toHaveCount(0);

  await page.getByRole('button', { name: 'Log out' }).click();
  await expect(welcome(page)).toBeVisible();
  await welcome(page).getByRole('button', { name: 'I have an account — log in' }).click();
  await logIn(page, 'Grace', 'wrong horse');
  await expect(welcome(page).getByRole('alert')).toHaveText('Wrong name or password.');
  await page.screenshot({ path: testInfo.outputPath('wrong-password.png') });

  await logIn(page, 'grace', 'correct horse');
  await expect(welcome(page)).toBeHidden();
  await expect(page.getByRole('status')).toHaveText('Connected');
  await expect(page.locator('.me-name')).toHaveText('Grace');
  await expect(log(page).getByText('hello from Grace')).toBeVisible();
});

test('logging out in one tab ends the session in the other, which keeps its unsent text', async ({ browser, server }) => {
  const context = await browser.newContext();
  const first = await context.newPage();
  await first.goto(server.url);
  await welcome(first).getByRole('button', { name: 'Create an account' }).click();
  await welcome(first).getByLabel('Username').fill('Lin');
  await welcome(first).getByLabel('Password').fill('lin password');
  await welcome(first).getByRole('button', { name: 'Create account' }).click();
  await expect(first.getByRole('status')).toHaveText('Connected');

  const second = await context.newPage();
  await second.goto(server.url);
  await expect(second.getByRole('status')).toHaveText('Connected');
  await composer(second).fill('half-written thought');

  await first.getByRole('button', { name: 'Log out' }).click();
  await expect(welcome(second)).toBeVisible();
  await expect(welcome(second)).toContainText('Your session has ended');
  await logIn(second, 'Lin', 'lin password');
  await expect(second.getByRole('status')).toHaveText('Connected');
  await expect(composer(second)).toHaveValue('half-written thought');
  await context.close();
});
