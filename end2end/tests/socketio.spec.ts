// The Socket.IO door: the official socket.io-client (as the seeds' pages, bots and apps use
// it) against the real server, over WebSocket and over long-polling, next to raw Huddle
// WebSocket clients and a person in the browser.
import { test, expect } from './fixtures';
import { io, Socket } from 'socket.io-client';
import WebSocket from 'ws';

type Ack = { success: boolean; userId?: number; messageId?: number; seq?: number; error?: string; code?: string; token?: string };

function connect(url: string, options: Record<string, unknown> = {}): Socket {
  return io(url, { forceNew: true, reconnection: false, ...options });
}

async function connected(socket: Socket): Promise<void> {
  if (socket.connected) return;
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('connect_error', (e) => reject(e));
  });
}

/** Emits with an acknowledgement and waits for it. */
function ask(socket: Socket, event: string, data: unknown): Promise<Ack> {
  return socket.timeout(10_000).emitWithAck(event, data);
}

/** Connects and picks a name; resolves once the server has the user's rooms. */
async function joinAs(url: string, username: string, options: Record<string, unknown> = {}): Promise<Socket> {
  const socket = connect(url, options);
  await connected(socket);
  const ack = await ask(socket, 'user-join', { username });
  expect(ack).toMatchObject({ success: true });
  // The rooms are subscribed right after; a joined room answers only after that.
  expect(await ask(socket, 'join-room', 'general')).toMatchObject({ success: true });
  return socket;
}

/** Collects every `new-message` a socket receives. */
function inbox(socket: Socket): { text: string; username: string; room: string; seq: number }[] {
  const got: { text: string; username: string; room: string; seq: number }[] = [];
  socket.on('new-message', (m) => got.push(m));
  return got;
}

for (const transport of ['websocket', 'polling'] as const) {
  test(`socket.io clients chat over ${transport}, rooms keep messages apart`, async ({ server }) => {
    const options = { transports: [transport] };
    const ada = await joinAs(server.url, `Ada${transport}`, options);
    const lin = await joinAs(server.url, `Lin${transport}`, options);
    const cy = await joinAs(server.url, `Cy${transport}`, options);
    const linGot = inbox(lin);
    const cyGot = inbox(cy);
    expect(ada.io.engine.transport.name).toBe(transport);

    const ack = await ask(ada, 'chat-message', { text: 'hello from socket.io' });
    expect(ack).toMatchObject({ success: true });
    expect(typeof ack.messageId).toBe('number');
    await expect.poll(() => linGot.map((m) => m.text)).toContain('hello from socket.io');
    expect(linGot[0]).toMatchObject({ username: `Ada${transport}`, room: 'general', seq: ack.seq });

    // A room of two: Cy hears nothing of it.
    expect(await ask(ada, 'join-room', 'side')).toMatchObject({ success: true });
    expect(await ask(lin, 'join-room', 'side')).toMatchObject({ success: true });
    expect(await ask(ada, 'chat-message', { text: 'just us', room: 'side' })).toMatchObject({ success: true });
    await expect.poll(() => linGot.map((m) => m.text)).toContain('just us');
    expect(await ask(ada, 'chat-message', { text: 'everyone again' })).toMatchObject({ success: true });
    await expect.poll(() => cyGot.map((m) => m.text)).toContain('everyone again');
    expect(cyGot.map((m) => m.text)).not.toContain('just us');
    for (const s of [ada, lin, cy]) s.close();
  });
}

test('user-join follows the name rules; sending before it is refused', async ({ server }) => {
  const socket = connect(server.url);
  await connected(socket);
  expect(await ask(socket, 'chat-message', { text: 'too early' })).toMatchObject({ success: false, code: 'not_signed_in' });
  expect(await ask(socket, 'user-join', { username: 'x' })).toMatchObject({ success: false, code: 'bad_name' });
  expect(await ask(socket, 'user-join', { username: 'bad<name>' })).toMatchObject({ success: false, code: 'bad_name' });
  expect(await ask(socket, 'user-join', {})).toMatchObject({ success: false, code: 'bad_name' });
  expect(await ask(socket, 'user-join', { username: 'Taken Name' })).toMatchObject({ success: true });
  const other = connect(server.url);
  await connected(other);
  expect(await ask(other, 'user-join', { username: 'taken name' })).toMatchObject({ success: false, code: 'name_taken' });
  expect(await ask(socket, 'chat-message', { text: '' })).toMatchObject({ success: false, code: 'empty' });
  socket.close();
  other.close();
});

test('a retry with the same clientMsgId is stored once; a resume with lastSeq gets exactly what was missed', async ({ server }) => {
  const ada = await joinAs(server.url, 'Ada');
  const first = await ask(ada, 'chat-message', { text: 'once', clientMsgId: 'retry-1' });
  const again = await ask(ada, 'chat-message', { text: 'once', clientMsgId: 'retry-1' });
  expect(again).toMatchObject({ success: true, messageId: first.messageId, seq: first.seq });

  const lin = connect(server.url);
  await connected(lin);
  const { token } = await ask(lin, 'user-join', { username: 'Lin' });
  expect(token).toBeTruthy();
  lin.close();
  // Lin is away while three messages are sent; Lin comes back with where it left off.
  const away: number[] = [];
  for (const text of ['m1', 'm2', 'm3']) away.push((await ask(ada, 'chat-message', { text })).seq!);
  const back = connect(server.url, { auth: { token, lastSeq: { general: first.seq } } });
  const got = inbox(back);
  await connected(back);
  await expect.poll(() => got.map((m) => m.text)).toEqual(['m1', 'm2', 'm3']);
  expect(got.map((m) => m.seq)).toEqual(away);
  // Then live, without repeats.
  await ask(ada, 'chat-message', { text: 'live' });
  await expect.poll(() => got.map((m) => m.text)).toEqual(['m1', 'm2', 'm3', 'live']);
  ada.close();
  back.close();
});

test('socket.io and raw Huddle WebSocket clients hear each other', async ({ server }) => {
  const sio = await joinAs(server.url, 'Sio');
  const got = inbox(sio);
  const guest = await fetch(`${server.url}/api/guest`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'Raw' }),
  });
  const { token } = await guest.json();
  const ws = new WebSocket(`${server.url.replace('http', 'ws')}/ws`);
  const frames: { type: string; [k: string]: unknown }[] = [];
  ws.on('message', (data) => frames.push(JSON.parse(data.toString())));
  await new Promise((resolve) => ws.once('open', resolve));
  ws.send(JSON.stringify({ type: 'hello', version: 1, token }));
  await expect.poll(() => frames.find((f) => f.type === 'welcome')).toBeTruthy();
  const welcome = frames.find((f) => f.type === 'welcome') as unknown as { rooms: { id: number; name: string }[] };
  const general = welcome.rooms.find((r) => r.name === 'general')!.id;
  ws.send(JSON.stringify({ type: 'subscribe', room: general }));
  await expect.poll(() => frames.some((f) => f.type === 'backlog' && !f.more)).toBe(true);

  const ack = await ask(sio, 'chat-message', { text: 'to the raw client' });
  await expect
    .poll(() => frames.filter((f) => f.type === 'message').map((f) => (f.message as { text: string }).text))
    .toContain('to the raw client');
  const raw = frames.find((f) => f.type === 'message' && (f.message as { text: string }).text === 'to the raw client')!;
  expect((raw.message as { seq: number }).seq).toBe(ack.seq);

  ws.send(JSON.stringify({ type: 'send', room: general, client_msg_id: 'raw-1', text: 'back to socket.io' }));
  await expect.poll(() => got.map((m) => m.text)).toContain('back to socket.io');
  expect(got.find((m) => m.text === 'back to socket.io')).toMatchObject({ username: 'Raw', room: 'general' });
  ws.close();
  sio.close();
});

test('a foreign origin is refused; oversized payloads are refused and the server carries on', async ({ server }) => {
  const evil = connect(server.url, { transports: ['polling'], extraHeaders: { Origin: 'https://evil.example' } });
  const refusal = await new Promise<Error>((resolve) => evil.once('connect_error', resolve));
  expect(refusal.message).toContain('origin_not_allowed');
  evil.close();

  // Over WebSocket the text reaches the chat rules: refused with too_long, the socket stays.
  const ws = await joinAs(server.url, 'Big', { transports: ['websocket'] });
  expect(await ask(ws, 'chat-message', { text: 'x'.repeat(200_000) })).toMatchObject({ success: false, code: 'too_long' });
  expect(await ask(ws, 'chat-message', { text: 'after the big one' })).toMatchObject({ success: true });

  // Over polling a body beyond max_frame_bytes is refused by the transport: that client is cut off.
  const polling = await joinAs(server.url, 'Bigger', { transports: ['polling'] });
  const closed = new Promise<string>((resolve) => polling.once('disconnect', resolve));
  polling.emit('chat-message', { text: 'x'.repeat(200_000) });
  expect(await closed).toBe('transport error');
  expect(await ask(ws, 'chat-message', { text: 'still here' })).toMatchObject({ success: true });
  ws.close();
});

test('the drawing app\'s draw, init and clear map onto the general whiteboard', async ({ server }) => {
  const ada = await joinAs(server.url, 'Ada');
  const lin = await joinAs(server.url, 'Lin');
  const lines: { x0: number; y0: number; x1: number; y1: number; color: string }[] = [];
  lin.on('draw', (line) => lines.push(line));
  ada.emit('draw', { x0: 100, y0: 150, x1: 400, y1: 300, color: '#dc2626' });
  await expect.poll(() => lines.length).toBe(1);
  expect(lines[0].x0).toBeCloseTo(100, 0);
  expect(lines[0].y1).toBeCloseTo(300, 0);
  expect(lines[0].color).toBe('#dc2626');

  // Someone arriving later gets the picture in `init`.
  const cy = connect(server.url);
  const init = new Promise<{ strokes: { x0: number }[] }>((resolve) => cy.once('init', resolve));
  await connected(cy);
  await ask(cy, 'user-join', { username: 'Cy' });
  expect((await init).strokes.map((s) => Math.round(s.x0))).toEqual([100]);

  // general belongs to no one: clearing it is for admins, so a guest's clear is refused.
  const refused = new Promise<{ code: string }>((resolve) => ada.once('error', resolve));
  ada.emit('clear');
  expect((await refused).code).toBe('forbidden');
  for (const s of [ada, lin, cy]) s.close();
});

test('a person in the browser and a socket.io client chat both ways in general', async ({ browser, server }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(server.url);
  const dialog = page.getByRole('dialog', { name: 'Welcome to Huddle' });
  await dialog.getByLabel('Display name').fill('Grace');
  await dialog.getByRole('button', { name: 'Start chatting' }).click();
  await expect(page.getByRole('status')).toHaveText(/Connected/);
  const log = page.getByRole('log', { name: 'Messages in general' });

  const bot = await joinAs(server.url, 'Bot');
  const got = inbox(bot);
  expect(await ask(bot, 'chat-message', { text: 'hello Grace, from a socket.io bot' })).toMatchObject({ success: true });
  await expect(log.getByText('hello Grace, from a socket.io bot')).toBeVisible();

  const composer = page.getByRole('textbox', { name: 'Message #general' });
  await composer.fill('hi bot');
  await composer.press('Enter');
  await expect.poll(() => got.map((m) => m.text)).toContain('hi bot');
  expect(got.find((m) => m.text === 'hi bot')).toMatchObject({ username: 'Grace' });
  bot.close();
  await context.close();
});

test.describe('with a short sign-in deadline', () => {
  test.use({ serverEnv: { HUDDLE_HELLO_TIMEOUT_S: '1' } });

  test('a socket that never picks a name is let go; one that does stays', async ({ server }) => {
    // Prompt connects (and picks a name) first, so its deadline has passed when Idle's has.
    const named = await joinAs(server.url, 'Prompt');
    const idle = connect(server.url);
    const error = new Promise<{ code: string }>((resolve) => idle.once('error', resolve));
    const gone = new Promise<string>((resolve) => idle.once('disconnect', resolve));
    await connected(idle);
    expect((await error).code).toBe('hello_required');
    expect(await gone).toBe('io server disconnect');

    expect(named.connected).toBe(true);
    expect(await ask(named, 'chat-message', { text: 'still connected' })).toMatchObject({ success: true });
    named.close();
  });
});

test.describe('with short sessions', () => {
  test.use({ serverEnv: { HUDDLE_SESSION_TTL_S: '10' } });

  test('a socket whose session expires is told and let go', async ({ server }) => {
    test.setTimeout(60_000);
    const socket = await joinAs(server.url, 'Brief');
    const error = new Promise<{ code: string }>((resolve) => socket.once('error', resolve));
    const gone = new Promise<string>((resolve) => socket.once('disconnect', resolve));
    expect((await error).code).toBe('invalid_token');
    expect(await gone).toBe('io server disconnect');
  });
});
