//! The whiteboard panel: toolbar (colour, width, undo, clear, who is drawing) and the canvas.
//! Pointer input draws at once on this screen and goes to the server in one batch per
//! animation frame (no faster than the server's limit); the picture is repainted from the
//! board state at device-pixel resolution whenever the canvas size changes.

use super::board_state::{BOARD_WIDTHS, PALETTE_NAMES};
use super::state::{now_ms, ChatState, RoomState};
use super::ConnStatus;
use crate::protocol::{rules, ClientMsg, RoomKind};
use leptos::prelude::*;

#[component]
pub fn Whiteboard(room: RoomState) -> impl IntoView {
    let state = expect_context::<ChatState>();
    let board = state.board;
    let canvas = NodeRef::<leptos::html::Canvas>::new();
    let room_id = room.id;
    let name = room.info.with_untracked(|i| i.name.clone());
    let can_clear = move || {
        room.info
            .with(|i| i.kind == RoomKind::Direct || i.board_open || i.role.moderates())
    };
    // A clock for "drawing now", ticking only while the board is shown.
    let now = RwSignal::new(now_ms());
    #[cfg(feature = "hydrate")]
    {
        if let Ok(handle) =
            set_interval_with_handle(move || now.set(now_ms()), std::time::Duration::from_millis(500))
        {
            on_cleanup(move || handle.clear());
        }
        paint::install(canvas, board);
    }
    let drawing_now = move || {
        let names = board.drawing_now(state.me.with(|m| m.as_ref().map(|m| m.id)), now.get());
        match names.len() {
            0 => String::new(),
            1 => format!("{} is drawing", names[0]),
            _ => format!("{} are drawing", names.join(", ")),
        }
    };
    let my_color = move || {
        state
            .me
            .with(|m| m.as_ref().map(|m| board.color_for(m.id)))
            .unwrap_or(rules::BOARD_PALETTE[0])
    };
    let connected = move || state.status.get() == ConnStatus::Connected;
    let swatches = rules::BOARD_PALETTE
        .iter()
        .zip(PALETTE_NAMES)
        .enumerate()
        .map(|(i, (hex, label))| {
            let hex: &'static str = hex;
            view! {
                <button class="swatch" data-swatch=i role="radio" aria-label=label
                    aria-checked=move || (my_color() == hex).to_string()
                    on:click=move |_| board.color.set(Some(hex))></button>
            }
        })
        .collect_view();
    let widths = BOARD_WIDTHS
        .iter()
        .map(|(label, width)| {
            let width = *width;
            view! {
                <button class="width-choice" role="radio" aria-label=*label data-width=*label
                    aria-checked=move || (board.width.get() == width).to_string()
                    on:click=move |_| board.width.set(width)>
                    <span aria-hidden="true"></span>
                </button>
            }
        })
        .collect_view();
    view! {
        <section class="whiteboard" aria-label="Whiteboard">
            <div class="board-toolbar" role="toolbar" aria-label="Drawing tools">
                <div class="palette" role="radiogroup" aria-label="Colour">{swatches}</div>
                <div class="widths" role="radiogroup" aria-label="Width">{widths}</div>
                <button class="text-button" on:click=move |_| state.request(ClientMsg::UndoStroke { room: room_id })>"Undo"</button>
                <Show when=can_clear>
                    <button class="text-button danger" on:click=move |_| state.request(ClientMsg::ClearBoard { room: room_id })>"Clear"</button>
                </Show>
                <span class="drawing-now" aria-live="polite">{drawing_now}</span>
                <button class="icon-button board-close" aria-label="Close whiteboard" on:click=move |_| state.close_board()>
                    <svg viewBox="0 0 20 20" aria-hidden="true"><path d="M5 5l10 10M15 5L5 15"/></svg>
                </button>
            </div>
            <div class="board-frame" class:offline=move || !connected()>
                <canvas node_ref=canvas class="board-canvas" role="img"
                    aria-label=format!("Whiteboard of {name}")
                    aria-busy=move || (!board.loaded.get()).to_string()></canvas>
                <Show when=move || !board.loaded.get() || !connected()>
                    <p class="board-overlay">{move || if connected() { "Loading the board…" } else { "Reconnecting — drawing resumes when connected" }}</p>
                </Show>
            </div>
        </section>
    }
}

/// Browser-only: painting and pointer input.
#[cfg(feature = "hydrate")]
mod paint {
    use super::super::board_state::BoardState;
    use super::super::state::ChatState;
    use super::super::ConnStatus;
    use crate::protocol::{BoardSegment, ClientMsg, BOARD_SCALE};
    use leptos::prelude::*;
    use wasm_bindgen::JsCast;
    use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, PointerEvent};

    /// The stroke being drawn here: points not yet sent, and the last one sent (the next
    /// batch starts with it so batches join up).
    struct Drawing {
        stroke: u32,
        color: &'static str,
        width: u16,
        unsent: Vec<[u16; 2]>,
        last_sent: Option<[u16; 2]>,
        last_point: [u16; 2],
    }

    /// Local to one mounted canvas.
    #[derive(Clone, Copy)]
    struct Local {
        drawing: StoredValue<Option<Drawing>, LocalStorage>,
        painted: StoredValue<usize>,
        repainted_at: StoredValue<u64>,
        last_send_ms: StoredValue<f64>,
        flush_scheduled: StoredValue<bool>,
    }

    fn context(canvas: &HtmlCanvasElement) -> Option<CanvasRenderingContext2d> {
        canvas.get_context("2d").ok()??.dyn_into().ok()
    }

    /// Matches the backing store to the displayed size times the device pixel ratio; true
    /// when it changed (the canvas was wiped).
    fn fit(canvas: &HtmlCanvasElement) -> bool {
        let ratio = web_sys::window().map_or(1.0, |w| w.device_pixel_ratio());
        let width = (canvas.client_width() as f64 * ratio).round() as u32;
        let height = (canvas.client_height() as f64 * ratio).round() as u32;
        if width == 0 || (canvas.width() == width && canvas.height() == height) {
            return false;
        }
        canvas.set_width(width);
        canvas.set_height(height);
        true
    }

    fn line(
        ctx: &CanvasRenderingContext2d,
        canvas: &HtmlCanvasElement,
        color: &str,
        width: u16,
        points: &[[u16; 2]],
    ) {
        let (w, h) = (canvas.width() as f64, canvas.height() as f64);
        let scale = BOARD_SCALE as f64;
        let at = |[x, y]: [u16; 2]| (x as f64 / scale * w, y as f64 / scale * h);
        let Some(&first) = points.first() else { return };
        ctx.set_stroke_style_str(color);
        ctx.set_line_width((width as f64 / scale * w).max(1.0));
        ctx.set_line_cap("round");
        ctx.set_line_join("round");
        ctx.begin_path();
        let (x, y) = at(first);
        ctx.move_to(x, y);
        if points.len() == 1 {
            ctx.line_to(x + 0.01, y); // a dot
        }
        for &point in &points[1..] {
            let (x, y) = at(point);
            ctx.line_to(x, y);
        }
        ctx.stroke();
    }

    fn paint_segment(ctx: &CanvasRenderingContext2d, canvas: &HtmlCanvasElement, segment: &BoardSegment) {
        line(ctx, canvas, &segment.color, segment.width, &segment.points);
    }

    fn repaint_all(canvas: &HtmlCanvasElement, board: BoardState, local: Local) {
        let Some(ctx) = context(canvas) else { return };
        fit(canvas);
        ctx.clear_rect(0.0, 0.0, canvas.width() as f64, canvas.height() as f64);
        let count = board.segments.with_untracked(|segments| {
            for segment in segments {
                paint_segment(&ctx, canvas, segment);
            }
            segments.len()
        });
        local.painted.set_value(count);
    }

    /// Normalised position of a pointer event on the canvas.
    fn board_point(canvas: &HtmlCanvasElement, ev: &PointerEvent) -> [u16; 2] {
        let (w, h) = (
            canvas.client_width().max(1) as f64,
            canvas.client_height().max(1) as f64,
        );
        let scale = BOARD_SCALE as f64;
        let clamp = |v: f64| (v.clamp(0.0, 1.0) * scale).round() as u16;
        [clamp(ev.offset_x() as f64 / w), clamp(ev.offset_y() as f64 / h)]
    }

    /// Sends the unsent points of the stroke, unless the last batch went out too recently
    /// (then the next animation frame tries again).
    fn flush(state: ChatState, local: Local, force: bool) {
        let room = state.board.room.get_untracked();
        let limits = state.limits.get_untracked();
        let (Some(room), Some(limits)) = (room, limits) else {
            return;
        };
        let now = js_sys::Date::now();
        let min_gap = 1000.0 / limits.board_batches_per_s.max(1) as f64;
        if !force && now - local.last_send_ms.get_value() < min_gap {
            schedule_flush(state, local);
            return;
        }
        let msg = local.drawing.try_update_value(|drawing| {
            let drawing = drawing.as_mut()?;
            if drawing.unsent.is_empty() {
                return None;
            }
            let points: Vec<[u16; 2]> = drawing
                .last_sent
                .into_iter()
                .chain(drawing.unsent.drain(..))
                .collect();
            drawing.last_sent = points.last().copied();
            Some(ClientMsg::Draw {
                room,
                stroke: drawing.stroke,
                color: drawing.color.to_owned(),
                width: drawing.width,
                points,
            })
        });
        if let Some(Some(msg)) = msg {
            local.last_send_ms.set_value(now);
            state.request(msg);
        }
    }

    fn schedule_flush(state: ChatState, local: Local) {
        if local.flush_scheduled.get_value() {
            return;
        }
        local.flush_scheduled.set_value(true);
        request_animation_frame(move || {
            local.flush_scheduled.set_value(false);
            flush(state, local, false);
        });
    }

    /// Wires painting (incremental, or from scratch on repaint or resize) and pointer input.
    pub fn install(canvas_ref: NodeRef<leptos::html::Canvas>, board: BoardState) {
        let state = expect_context::<ChatState>();
        let local = Local {
            drawing: StoredValue::new_local(None),
            painted: StoredValue::new(0),
            repainted_at: StoredValue::new(u64::MAX),
            last_send_ms: StoredValue::new(0.0),
            flush_scheduled: StoredValue::new(false),
        };
        Effect::new(move |_| {
            let repaint = board.repaint.get();
            let count = board.segments.with(Vec::len);
            let Some(canvas) = canvas_ref.get() else { return };
            if repaint != local.repainted_at.get_value() || fit(&canvas) || count < local.painted.get_value()
            {
                local.repainted_at.set_value(repaint);
                repaint_all(&canvas, board, local);
                return;
            }
            let Some(ctx) = context(&canvas) else { return };
            board.segments.with_untracked(|segments| {
                for segment in &segments[local.painted.get_value()..] {
                    paint_segment(&ctx, &canvas, segment);
                }
            });
            local.painted.set_value(count);
        });
        let resize = window_event_listener(leptos::ev::resize, move |_| {
            if let Some(canvas) = canvas_ref.get_untracked() {
                if fit(&canvas) {
                    repaint_all(&canvas, board, local);
                }
            }
        });
        on_cleanup(move || resize.remove());

        let with_canvas = move |f: &dyn Fn(&HtmlCanvasElement)| {
            if let Some(canvas) = canvas_ref.get_untracked() {
                f(&canvas);
            }
        };
        canvas_ref.on_load(move |canvas| {
            let down = move |ev: PointerEvent| {
                let me = state.me.get_untracked();
                if state.status.get_untracked() != ConnStatus::Connected
                    || !board.loaded.get_untracked()
                    || ev.button() > 0
                {
                    return;
                }
                let Some(me) = me else { return };
                ev.prevent_default();
                with_canvas(&|canvas| {
                    let _ = canvas.set_pointer_capture(ev.pointer_id());
                    let point = board_point(canvas, &ev);
                    let drawing = Drawing {
                        stroke: (js_sys::Math::random() * u32::MAX as f64) as u32,
                        color: board.color_for(me.id),
                        width: board.width.get_untracked(),
                        unsent: vec![point],
                        last_sent: None,
                        last_point: point,
                    };
                    if let Some(ctx) = context(canvas) {
                        line(&ctx, canvas, drawing.color, drawing.width, &[point]);
                    }
                    local.drawing.set_value(Some(drawing));
                });
                schedule_flush(state, local);
            };
            let moved = move |ev: PointerEvent| {
                let max_points = state
                    .limits
                    .with_untracked(|l| l.as_ref().map_or(64, |l| l.board_points_per_batch))
                    as usize;
                with_canvas(&|canvas| {
                    let point = board_point(canvas, &ev);
                    let full = local.drawing.try_update_value(|drawing| {
                        let drawing = drawing.as_mut()?;
                        if drawing.last_point == point {
                            return Some(false);
                        }
                        if let Some(ctx) = context(canvas) {
                            line(
                                &ctx,
                                canvas,
                                drawing.color,
                                drawing.width,
                                &[drawing.last_point, point],
                            );
                        }
                        drawing.last_point = point;
                        drawing.unsent.push(point);
                        Some(drawing.unsent.len() + 1 >= max_points)
                    });
                    match full {
                        Some(Some(true)) => flush(state, local, true),
                        Some(Some(false)) => schedule_flush(state, local),
                        _ => {}
                    }
                });
            };
            let up = move |_: PointerEvent| {
                flush(state, local, true);
                local.drawing.set_value(None);
            };
            let listen = |name: &str, handler: Box<dyn Fn(PointerEvent)>| {
                let closure = wasm_bindgen::closure::Closure::<dyn Fn(PointerEvent)>::wrap(handler);
                let _ = canvas.add_event_listener_with_callback(name, closure.as_ref().unchecked_ref());
                closure.forget(); // lives as long as the canvas element
            };
            listen("pointerdown", Box::new(down));
            listen("pointermove", Box::new(moved));
            listen("pointerup", Box::new(up));
            listen("pointercancel", Box::new(up));
        });
    }
}
