// Test fixtures: a real Huddle server per test, on 127.0.0.1 with a fresh data folder.
// The binary and site come from the build made by scripts/test.sh (HUDDLE_BIN, HUDDLE_SITE_ROOT).
import { test as base, expect } from '@playwright/test';
import type { Browser, Page } from '@playwright/test';
import { spawn, ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import WebSocket from 'ws';

const repoRoot = path.resolve(__dirname, '..', '..');

export class HuddleServer {
  url = '';
  private child?: ChildProcess;
  private exited?: Promise<number | null>;
  readonly dataDir = mkdtempSync(path.join(tmpdir(), 'huddle-e2e-'));

  /** Extra HUDDLE_* settings; change them before a restart to restart with other limits. */
  constructor(public env: Record<string, string> = {}) {}

  /** Starts the server; resolves once it logged the address it listens on. */
  async start(port = 0): Promise<void> {
    const bin = process.env.HUDDLE_BIN || path.join(repoRoot, 'target', 'debug', 'huddle');
    const child = spawn(bin, [], {
      cwd: repoRoot,
      env: {
        ...process.env,
        HUDDLE_ADDR: `127.0.0.1:${port}`,
        HUDDLE_DATA_DIR: this.dataDir,
        HUDDLE_SITE_ROOT: process.env.HUDDLE_SITE_ROOT || path.join(repoRoot, 'target', 'site'),
        HUDDLE_LOG_FORMAT: 'json',
        HUDDLE_SHUTDOWN_GRACE_S: '2',
        ...this.env,
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    this.child = child;
    this.exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
    const lines = readline.createInterface({ input: child.stdout! });
    this.url = await new Promise<string>((resolve, reject) => {
      child.on('exit', (code) => reject(new Error(`huddle exited early with code ${code}`)));
      lines.on('line', (line) => {
        try {
          const entry = JSON.parse(line);
          if (entry.message === 'listening') resolve(`http://${entry.addr}`);
        } catch {
          /* not a log line */
        }
      });
    });
  }

  /** Port the server listens on, so a restart can reuse it. */
  get port(): number {
    return Number(new URL(this.url).port);
  }

  /** Graceful stop (SIGTERM); resolves with the exit code. */
  async stop(): Promise<number | null> {
    if (!this.child || this.child.exitCode !== null) return this.child?.exitCode ?? null;
    this.child.kill('SIGTERM');
    return this.exited!;
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

export const test = base.extend<{
  server: HuddleServer;
  serverEnv: Record<string, string>;
  closeLeftoverContexts: void;
}>({
  // Settings for the test's server, e.g. test.use({ serverEnv: { HUDDLE_RECONNECT_MAX_ATTEMPTS: '2' } }).
  serverEnv: [{}, { option: true }],
  // Browser contexts a test opened itself (`person`) outlive it, and their pages keep trying to
  // reconnect to its stopped server: by the end of a run, dozens of them slowed every later test.
  // They are closed when the worker's next test starts (not at the end of their own test, so
  // that failure screenshots and traces are still taken from them).
  closeLeftoverContexts: [
    async ({ browser }, use) => {
      await Promise.all(browser.contexts().map((context) => context.close()));
      await use();
    },
    { auto: true },
  ],
  server: async ({ serverEnv }, use) => {
    const server = new HuddleServer({ ...serverEnv });
    await server.start();
    await use(server);
    await server.dispose();
  },
});

export { expect };

/** Opens Huddle in a fresh browser context and signs in as the guest `name`. */
export async function person(
  browser: Browser,
  url: string,
  name: string,
  viewport = { width: 1280, height: 800 },
  deviceScaleFactor = 1,
): Promise<Page> {
  const context = await browser.newContext({ viewport, deviceScaleFactor, reducedMotion: 'reduce' });
  const page = await context.newPage();
  await page.goto(url);
  const dialog = page.getByRole('dialog', { name: 'Welcome to Huddle' });
  await dialog.getByLabel('Display name').fill(name);
  await dialog.getByRole('button', { name: 'Start chatting' }).click();
  await expect(dialog).toBeHidden();
  await expect(page.getByRole('status')).toHaveText(/Connected/);
  return page;
}

/** A new guest's session token. */
export async function guestToken(url: string, name: string): Promise<string> {
  const guest = await fetch(`${url}/api/guest`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name }),
  });
  return (await guest.json()).token;
}

/** A raw Huddle WebSocket connection of its own (so a rate budget of its own): hello with
 * `token`, then each frame in turn, each answered by a frame of the given type before the
 * next goes (an `error` instead fails); closes and returns the answers. */
export async function rawSteps(
  url: string,
  token: string,
  steps: { frame: unknown; answer: string }[],
): Promise<{ type: string; [k: string]: unknown }[]> {
  const ws = new WebSocket(`${url.replace('http', 'ws')}/ws`);
  const frames: { type: string; [k: string]: unknown }[] = [];
  ws.on('message', (data) => frames.push(JSON.parse(data.toString())));
  await new Promise((resolve) => ws.once('open', resolve));
  ws.send(JSON.stringify({ type: 'hello', version: 1, token }));
  await expect.poll(() => frames.some((f) => f.type === 'welcome')).toBe(true);
  const answers = [];
  for (const { frame, answer } of steps) {
    frames.length = 0;
    ws.send(JSON.stringify(frame));
    await expect.poll(() => frames.find((f) => f.type === answer || f.type === 'error')?.type).toBe(answer);
    answers.push(frames.find((f) => f.type === answer)!);
  }
  ws.close();
  return answers;
}
