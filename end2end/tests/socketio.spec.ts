// The Socket.IO door: the official socket.io-client (as the seeds' pages, bots and apps use
// it) against the real server, over WebSocket and over long-polling, next to raw Huddle
// WebSocket clients and a person in the browser.
import { test, expect, guestToken, rawSteps } from './fixtures';
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

/** A raw Huddle WebSocket client (the Leptos app's protocol), signed in as a guest. */
async function rawClient(url: string, name: string) {
  const guest = await fetch(`${url}/api/guest`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name }),
  });
  const { token } = await guest.json();
  const ws = new WebSocket(`${url.replace('http', 'ws')}/ws`);
  const frames: { type: string; [k: string]: unknown }[] = [];
  ws.on('message', (data) => frames.push(JSON.parse(data.toString())));
  await new Promise((resolve) => ws.once('open', resolve));
  const send = (frame: unknown) => ws.send(JSON.stringify(frame));
  const until = async (match: (f: { type: string; [k: string]: unknown }) => boolean) => {
    await expect.poll(() => frames.some(match)).toBe(true);
    return frames.find(match)!;
  };
  send({ type: 'hello', version: 1, token });
  const welcome = (await until((f) => f.type === 'welcome')) as unknown as { rooms: { id: number; name: string }[] };
  const general = welcome.rooms.find((r) => r.name === 'general')!.id;
  send({ type: 'subscribe', room: general });
  await until((f) => f.type === 'backlog' && !f.more);
  return { send, until, frames, general, close: () => ws.close() };
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
    expect(linGot[0]).toMatchObject({ id: ack.messageId, username: `Ada${transport}`, room: 'general', seq: ack.seq });
    const first = linGot[0] as unknown as { userId: number; timestamp: string };
    expect(Number.isInteger(first.userId)).toBe(true);
    expect(Date.now() - Date.parse(first.timestamp)).toBeLessThan(10 * 60_000);

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
  const joined = await ask(socket, 'user-join', { username: 'Taken Name' });
  expect(joined).toMatchObject({ success: true, username: 'Taken Name' });
  expect(Number.isInteger(joined.userId)).toBe(true);
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
  // A retry sent while the first is still on its way: both get the one stored message.
  const both = await Promise.all([
    ask(ada, 'chat-message', { text: 'twice in flight', clientMsgId: 'retry-2' }),
    ask(ada, 'chat-message', { text: 'twice in flight', clientMsgId: 'retry-2' }),
  ]);
  expect(both[0]).toMatchObject({ success: true });
  expect(both[1]).toMatchObject({ success: true, messageId: both[0].messageId, seq: both[0].seq });

  const lin = connect(server.url);
  await connected(lin);
  const { token } = await ask(lin, 'user-join', { username: 'Lin' });
  expect(token).toBeTruthy();
  lin.close();
  // Lin is away while three messages are sent; Lin comes back with where it left off.
  const away: number[] = [];
  for (const text of ['m1', 'm2', 'm3']) away.push((await ask(ada, 'chat-message', { text })).seq!);
  const back = connect(server.url, { auth: { token, lastSeq: { general: both[0].seq } } });
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

  // A text over max_message_chars but within max_frame_bytes reaches the chat rules:
  // refused with too_long, the socket stays.
  const ws = await joinAs(server.url, 'Big', { transports: ['websocket'] });
  expect(await ask(ws, 'chat-message', { text: 'x'.repeat(3_000) })).toMatchObject({ success: false, code: 'too_long' });
  expect(await ask(ws, 'chat-message', { text: 'after the long one' })).toMatchObject({ success: true });

  // Beyond max_frame_bytes (64 KiB) the transport refuses it, on both: that client is cut off,
  // everyone else carries on.
  for (const transport of ['websocket', 'polling']) {
    const big = await joinAs(server.url, `Bigger ${transport}`, { transports: [transport] });
    const closed = new Promise<string>((resolve) => big.once('disconnect', resolve));
    big.emit('chat-message', { text: 'x'.repeat(200_000) });
    expect(['transport error', 'transport close']).toContain(await closed);
    expect(await ask(ws, 'chat-message', { text: `still here after ${transport}` })).toMatchObject({ success: true });
  }
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

  // A line the canvas cannot hold is refused and reaches no one.
  const refused = new Promise<{ code: string }>((resolve) => ada.once('error', resolve));
  ada.emit('draw', { x0: -5, y0: 10, x1: 20, y1: 30 });
  expect((await refused).code).toBe('bad_stroke');
  const offBoard = new Promise<{ code: string }>((resolve) => ada.once('error', resolve));
  ada.emit('draw', { x0: 10, y0: 10, x1: 5_000, y1: 30 });
  expect((await offBoard).code).toBe('bad_stroke');

  // Undo (from the Leptos side; the seeds have none) repaints the seeds' canvas: clear, then
  // the lines that remain.
  ada.emit('draw', { x0: 500, y0: 500, x1: 600, y1: 550, color: '#16a34a' });
  await expect.poll(() => lines.length).toBe(2);
  const repaint: string[] = [];
  lin.on('clear', () => repaint.push('clear'));
  lin.on('draw', (line) => repaint.push(`draw ${Math.round(line.x0)}`));
  const raw = await rawClient(server.url, 'Undoer');
  raw.send({ type: 'open_board', room: raw.general });
  await raw.until((f) => f.type === 'board' && !f.more);
  raw.send({ type: 'draw', room: raw.general, stroke: 7, color: '#000000', width: 38, points: [[1000, 1000], [2000, 2000]] });
  await expect.poll(() => repaint).toEqual(['draw 80']);
  raw.send({ type: 'undo_stroke', room: raw.general });
  await expect.poll(() => repaint).toEqual(['draw 80', 'clear', 'draw 100', 'draw 500']);
  raw.close();

  // general is everyone's board (as in the seeds' app): anyone clears it, for everyone.
  const cleared = [lin, cy].map((s) => new Promise<void>((resolve) => s.once('clear', () => resolve())));
  ada.emit('clear');
  await Promise.all(cleared);
  const late = connect(server.url);
  const empty = new Promise<{ strokes: unknown[] }>((resolve) => late.once('init', resolve));
  await connected(late);
  await ask(late, 'user-join', { username: 'Late' });
  expect((await empty).strokes).toEqual([]);
  for (const s of [ada, lin, cy, late]) s.close();
});

test('join-room, room-message, typing and the online lists work as the seeds name them', async ({ server }) => {
  const ada = await joinAs(server.url, 'Ada');
  const lin = await joinAs(server.url, 'Lin');
  const arrivals: { username: string; room: string }[] = [];
  ada.on('user-joined', (j) => arrivals.push(j));
  const messages: { text: string; user: string; room: string }[] = [];
  ada.on('message', (m) => messages.push(m));
  const typing: { room: string; users: string[] }[] = [];
  ada.on('typing-indicator', (t) => typing.push(t));
  const online: { room: string; users: string[]; total: number }[] = [];
  ada.on('online-users', (o) => online.push(o));
  const counts: number[] = [];
  ada.on('user count', (n) => counts.push(n));

  // Ada makes a room; Lin joining it is announced to Ada.
  expect(await ask(ada, 'join-room', 'lobby')).toMatchObject({ success: true, room: 'lobby' });
  expect(await ask(lin, 'join-room', 'lobby')).toMatchObject({ success: true, room: 'lobby' });
  await expect.poll(() => arrivals).toContainEqual(expect.objectContaining({ username: 'Lin', room: 'lobby' }));
  await expect
    .poll(() => online.filter((o) => o.room === 'lobby').map((o) => [...o.users].sort()).pop())
    .toEqual(['Ada', 'Lin']);

  // The earlier tutorial's room-message arrives as `message`.
  expect(await ask(lin, 'room-message', { room: 'lobby', text: 'hi lobby' })).toMatchObject({ success: true });
  await expect.poll(() => messages).toContainEqual(expect.objectContaining({ text: 'hi lobby', user: 'Lin', room: 'lobby' }));

  // Typing on and off.
  lin.emit('typing', { room: 'lobby' });
  await expect.poll(() => typing.filter((t) => t.room === 'lobby').pop()?.users).toEqual(['Lin']);
  lin.emit('stop-typing', { room: 'lobby' });
  await expect.poll(() => typing.filter((t) => t.room === 'lobby').pop()?.users).toEqual([]);

  // `user count` follows people arriving and leaving.
  const cy = await joinAs(server.url, 'Cy');
  await expect.poll(() => counts[counts.length - 1]).toBe(3);
  cy.close();
  await expect.poll(() => counts[counts.length - 1]).toBe(2);
  // A refused join says why, in the ack and as `error`.
  const error = new Promise<{ code: string }>((resolve) => lin.once('error', resolve));
  expect(await ask(lin, 'join-room', 'x')).toMatchObject({ success: false, code: 'bad_name' });
  expect((await error).code).toBe('bad_name');
  ada.close();
  lin.close();
});

test('a session cookie signs a socket in; the connection caps and rate limits apply', async ({ server }) => {
  server.env = { HUDDLE_IP_MAX_OPEN: '3', HUDDLE_MSG_RATE_PER_S: '1', HUDDLE_MSG_BURST: '2' };
  await server.stop();
  await server.start(server.port);
  const guest = await fetch(`${server.url}/api/guest`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'Cookie' }),
  });
  const cookie = guest.headers.get('set-cookie')!.split(';')[0];
  const socket = connect(server.url, { transports: ['websocket'], extraHeaders: { Cookie: cookie } });
  await connected(socket);
  // Already signed in: user-join keeps the session's name.
  expect(await ask(socket, 'user-join', { username: 'Someone Else' })).toMatchObject({ success: true, username: 'Cookie' });
  // Eight at once against a burst of two: some are refused with rate_limited (the same
  // code as /ws), the rest stored.
  const acks = await Promise.all(
    Array.from({ length: 8 }, (_, i) => ask(socket, 'chat-message', { text: `quick ${i}`, clientMsgId: `q${i}` })),
  );
  expect(acks.filter((a) => a.success).length).toBeGreaterThanOrEqual(2);
  expect(acks.filter((a) => !a.success).map((a) => a.code)).toContain('rate_limited');

  // Three open from this address; the fourth is refused before it joins.
  const more = [connect(server.url, { transports: ['websocket'] }), connect(server.url, { transports: ['websocket'] })];
  await Promise.all(more.map(connected));
  const fourth = connect(server.url, { transports: ['polling'] });
  const refusal = await new Promise<Error>((resolve) => fourth.once('connect_error', resolve));
  expect(refusal.message).toContain('too_many_connections');
  for (const s of [socket, ...more, fourth]) s.close();
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

test.describe('with a tight request budget', () => {
  test.use({ serverEnv: { HUDDLE_REQUEST_RATE_PER_S: '2', HUDDLE_REQUEST_BURST: '3' } });

  test('room subscriptions the server refused for now are made again, so every room is heard', async ({ server }) => {
    // Busy belongs to general and four more rooms, each made over a connection of its own.
    const busy = await guestToken(server.url, 'Busy');
    const names = ['alpha', 'beta', 'gamma', 'delta'];
    const ids: Record<string, number> = {};
    for (const name of names) {
      const [joined] = await rawSteps(server.url, busy, [{ frame: { type: 'create_room', name }, answer: 'joined' }]);
      ids[name] = (joined.room as { id: number }).id;
    }

    // On connect the bridge says hello and subscribes six rooms at once against a burst of
    // three: some are refused with rate_limited, and the bridge subscribes them again.
    const socket = connect(server.url, { transports: ['websocket'], auth: { token: busy } });
    const got = inbox(socket);
    await connected(socket);

    // Someone else says something in each room; Busy hears every one of them.
    const poster = await guestToken(server.url, 'Poster');
    for (const name of names) {
      await rawSteps(server.url, poster, [
        { frame: { type: 'join', room: ids[name] }, answer: 'joined' },
        { frame: { type: 'send', room: ids[name], client_msg_id: `in-${name}`, text: `hello ${name}` }, answer: 'ack' },
      ]);
    }
    await expect
      .poll(() => got.map((m) => m.room).sort(), { timeout: 15_000 })
      .toEqual([...names].sort());
    expect(got.map((m) => m.text).sort()).toEqual(names.map((n) => `hello ${n}`).sort());
    socket.close();
  });
});
