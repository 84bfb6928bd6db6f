//! The conversation pane: header, the message list (grouping, day separators, delivery states,
//! auto-scroll with a "new messages" pill, older history on demand) and the typing line.

use super::composer::Composer;
use super::format::{self, Segment};
use super::state::{ChatState, Delivery, RoomState, TimelineItem};
use super::{Avatar, ConnectionStatus, UiState};
use crate::protocol::{Attachment, ClientMsg, MessageKind, RoomKind, Seq, DEFAULT_PAGE};
use leptos::prelude::*;

#[component]
pub fn Conversation() -> impl IntoView {
    let state = expect_context::<ChatState>();
    let ui = expect_context::<UiState>();
    // Re-render the room view only when the shown room changes, not when the room list does.
    let current = Memo::new(move |_| state.current_room().map(|r| r.id));
    let title = move || {
        state.current_room().map(|r| {
            r.info.with(|i| match i.kind {
                RoomKind::Direct => i.name.clone(),
                _ => format!("# {}", i.name),
            })
        })
    };
    let subtitle = move || {
        state.current_room().map(|r| {
            r.info.with(|i| {
                let counts = format!(
                    "{} · {} online",
                    format::count(i.members, "member", "members"),
                    i.online
                );
                if i.topic.is_empty() {
                    counts
                } else {
                    format!("{} · {counts}", i.topic)
                }
            })
        })
    };
    view! {
        <main class="conversation">
            <header class="conversation-header">
                <button class="icon-button menu-button" aria-label="Open menu" aria-controls="sidebar"
                    aria-expanded=move || ui.drawer_open.get().to_string()
                    on:click=move |_| ui.drawer_open.update(|o| *o = !*o)>
                    <svg viewBox="0 0 20 20" aria-hidden="true"><path d="M3 5h14M3 10h14M3 15h14"/></svg>
                </button>
                <div class="room-heading">
                    <h1 class="room-title">{move || title().unwrap_or_else(|| "Huddle".to_owned())}</h1>
                    <p class="room-subtitle">{subtitle}</p>
                </div>
                <ConnectionStatus/>
                <Show when=move || current.get().is_some()>
                    <button class="icon-button" aria-label="Whiteboard"
                        aria-pressed=move || (state.board.room.get().is_some() && state.board.room.get() == current.get()).to_string()
                        on:click=move |_| match (state.board.room.get_untracked(), current.get_untracked()) {
                            (Some(open), Some(shown)) if open == shown => state.close_board(),
                            (_, Some(shown)) => state.open_board(shown),
                            _ => {}
                        }>
                        <svg viewBox="0 0 20 20" aria-hidden="true"><rect x="2.5" y="3.5" width="15" height="11" rx="1.5"/><path d="M6 11l3-3 2 2 3-3M7 17.5h6M10 14.5v3"/></svg>
                    </button>
                </Show>
                <button class="icon-button" aria-label="Search messages" aria-controls="search"
                    aria-pressed=move || state.search.open.get().to_string()
                    on:click=move |_| {
                        state.search.mentions_mode.set(false);
                        state.search.open.update(|o| *o = !*o);
                    }>
                    <svg viewBox="0 0 20 20" aria-hidden="true"><circle cx="8.5" cy="8.5" r="5"/><path d="M12.5 12.5l5 5"/></svg>
                </button>
                <button class="icon-button" aria-label="Toggle members" aria-controls="members"
                    on:click=move |_| ui.members_toggled.update(|o| *o = !*o)>
                    <svg viewBox="0 0 20 20" aria-hidden="true"><circle cx="7" cy="7" r="3"/><path d="M2 17c0-3 2.5-5 5-5s5 2 5 5"/><circle cx="14" cy="8" r="2.5"/><path d="M13 12.5c2.5 0 5 1.5 5 4.5"/></svg>
                </button>
            </header>
            {move || match current.get().and_then(|id| state.room(id)) {
                Some(room) => view! { <RoomView room=room/> }.into_any(),
                None => view! {
                    <section class="empty-state">
                        <h2>"Welcome to Huddle"</h2>
                        <p>"Rooms, direct messages and a delivery you can count on."</p>
                    </section>
                }.into_any(),
            }}
        </main>
    }
}

/// One row of the rendered timeline.
// Nearly every row is an `Item`: boxing it would add an allocation per row and save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq)]
enum Row {
    Day(String),
    Item {
        item: TimelineItem,
        header: bool,
    },
    /// Messages between two loaded ones are not loaded (after opening an older search
    /// result); `before` is the seq of the newer loaded one.
    Gap {
        before: Seq,
    },
}

impl Row {
    fn key(&self) -> String {
        match self {
            Row::Day(label) => format!("day-{label}"),
            Row::Gap { before } => format!("gap-{}", before.0),
            Row::Item { item, header } => {
                let delivery = match &item.delivery {
                    Delivery::Pending => "p",
                    Delivery::Sent => "s",
                    Delivery::Failed(_) => "f",
                };
                let changes = if item.deleted {
                    "d"
                } else if item.edited {
                    "e"
                } else {
                    ""
                };
                format!("{}-{}-{delivery}{changes}", item.key, u8::from(*header))
            }
        }
    }
}

fn rows(timeline: &[TimelineItem]) -> Vec<Row> {
    let now = super::state::now_ms();
    let mut rows = Vec::with_capacity(timeline.len() + 4);
    let mut prev: Option<&TimelineItem> = None;
    let mut prev_seq: Option<Seq> = None;
    for item in timeline {
        // Stored entries (edit and delete events too) have consecutive seqs unless a hole
        // was left by opening an older message.
        if let (Some(before), Some(seq)) = (prev_seq, item.seq) {
            if seq.0 > before.0 + 1 {
                rows.push(Row::Gap { before: seq });
            }
        }
        prev_seq = item.seq.or(prev_seq);
        // Edit and delete events show as changes to their message, not as rows.
        if item.kind.amends() {
            continue;
        }
        let new_day = prev.is_none_or(|p| format::day_number(p.ts) != format::day_number(item.ts));
        if new_day {
            rows.push(Row::Day(format::day_label(item.ts, now)));
        }
        let continues = !new_day
            && format::continues_group(
                prev.map(|p| (&p.author, p.kind, p.ts)),
                &item.author,
                item.kind,
                item.ts,
            );
        rows.push(Row::Item {
            item: item.clone(),
            header: !continues,
        });
        prev = Some(item);
    }
    rows
}

#[component]
fn RoomView(room: RoomState) -> impl IntoView {
    let state = expect_context::<ChatState>();
    let list = NodeRef::<leptos::html::Div>::new();
    let at_bottom = RwSignal::new(true);
    // The image shown full size, over everything.
    let viewing = ImageViewer(RwSignal::new(None));
    provide_context(viewing);
    let dragging = RwSignal::new(false);
    let on_drop = move |ev: leptos::ev::DragEvent| {
        ev.prevent_default();
        dragging.set(false);
        #[cfg(feature = "hydrate")]
        crate::client::upload::start_all(room, ev.data_transfer().and_then(|d| d.files()));
    };
    let unseen = RwSignal::new(0usize);
    let label = move || room.info.with(|i| format!("Messages in {}", i.name));

    let scroll_to_bottom = move || {
        if let Some(el) = list.get_untracked() {
            el.set_scroll_top(el.scroll_height());
        }
        unseen.set(0);
    };
    let load_older = move || {
        if room.loading_older.get_untracked() || !room.has_older.get_untracked() {
            return;
        }
        if let Some(before) = room.oldest_seq() {
            room.loading_older.set(true);
            state.request(ClientMsg::History {
                room: room.id,
                before_seq: before,
                limit: Some(DEFAULT_PAGE),
            });
        }
    };
    let on_scroll = move |_| {
        let Some(el) = list.get_untracked() else { return };
        let bottom = el.scroll_height() - el.scroll_top() - el.client_height() < 48;
        at_bottom.set(bottom);
        if bottom {
            unseen.set(0);
        }
        if el.scroll_top() < 80 {
            load_older();
        }
    };

    // Keep the reader's place: follow new messages at the bottom, hold position when older
    // ones are added above, and count what arrived while scrolled up.
    Effect::new(move |previous: Option<(usize, Option<String>, i32)>| {
        let (len, first) = room
            .timeline
            .with(|t| (t.len(), t.first().map(|i| i.key.clone())));
        let Some(el) = list.get_untracked() else {
            return (len, first, 0);
        };
        let (prev_len, prev_first, prev_height) = previous.unwrap_or((0, None, 0));
        let prepended = prev_first.is_some() && first != prev_first && len > prev_len;
        let height = el.scroll_height();
        if prepended {
            el.set_scroll_top(el.scroll_top() + height - prev_height);
        } else if at_bottom.get_untracked() || prev_len == 0 {
            el.set_scroll_top(height);
        } else if len > prev_len {
            unseen.update(|n| *n += len - prev_len);
        }
        (len, first, el.scroll_height())
    });

    // Bring a message opened from search into view once it is rendered (once per jump, so
    // later messages do not pull the view back).
    Effect::new(move |shown: Option<Option<Seq>>| {
        let shown = shown.flatten();
        let target = room.highlight.get();
        match target {
            Some(seq) if target != shown => {
                if room.timeline.with(|t| t.iter().any(|i| i.seq == Some(seq))) {
                    at_bottom.set(false);
                    scroll_into_view(&format!("message-{}-{}", room.id.0, seq.0));
                    return target;
                }
                shown
            }
            _ => shown,
        }
    });

    view! {
        <Show when=move || state.board.room.get() == Some(room.id)>
            <super::board::Whiteboard room=room/>
        </Show>
        <div class="timeline-wrap" class:dragging=move || dragging.get()
            on:dragover=move |ev: leptos::ev::DragEvent| { ev.prevent_default(); dragging.set(true); }
            on:dragleave=move |_| dragging.set(false)
            on:drop=on_drop>
            <Show when=move || dragging.get()>
                <div class="drop-hint" aria-hidden="true">"Drop files to send them"</div>
            </Show>
            <div class="timeline" node_ref=list role="log" aria-live="polite" aria-label=label tabindex="0" on:scroll=on_scroll>
                <Show when=move || room.has_older.get()>
                    <div class="older">
                        <button class="text-button" disabled=move || room.loading_older.get() on:click=move |_| load_older()>
                            {move || if room.loading_older.get() { "Loading…" } else { "Load older messages" }}
                        </button>
                    </div>
                </Show>
                <Show when=move || room.timeline.with(|t| t.is_empty())>
                    <p class="timeline-empty">"No messages yet. Say hello!"</p>
                </Show>
                <For each=move || room.timeline.with(|t| rows(t)) key=Row::key let:row>
                    <RowView row=row room=room/>
                </For>
            </div>
            <Show when={move || unseen.get() > 0}>
                <button class="new-pill" on:click=move |_| scroll_to_bottom()>
                    {move || match unseen.get() { 1 => "1 new message ↓".to_owned(), n => format!("{n} new messages ↓") }}
                </button>
            </Show>
        </div>
        <TypingLine room=room/>
        <Composer room=room/>
        {move || viewing.0.get().map(|image| view! { <ImageView image=image/> })}
    }
}

/// The image a person opened from the timeline (None: none).
#[derive(Clone, Copy)]
struct ImageViewer(RwSignal<Option<Attachment>>);

/// An opened image at full size; Escape, the close button or a click beside it closes it.
#[component]
fn ImageView(image: Attachment) -> impl IntoView {
    let viewer = expect_context::<ImageViewer>();
    let close = move || viewer.0.set(None);
    let button = NodeRef::<leptos::html::Button>::new();
    Effect::new(move |_| {
        if let Some(el) = button.get() {
            let _ = el.focus();
        }
    });
    view! {
        <div class="viewer" role="dialog" aria-modal="true" aria-label=format!("Image: {}", image.name)
            on:click=move |_| close()
            on:keydown=move |ev| if ev.key() == "Escape" { close() }>
            <img src=format!("/files/{}", image.id) alt=image.name.clone() on:click=|ev| ev.stop_propagation()/>
            <div class="viewer-bar" on:click=|ev| ev.stop_propagation()>
                <span>{image.name.clone()}</span>
                <a class="text-button" href=format!("/files/{}", image.id) download=image.name.clone()>"Download"</a>
                <button class="icon-button" node_ref=button aria-label="Close image" on:click=move |_| close()>"×"</button>
            </div>
        </div>
    }
}

/// A message's files: images as previews that open full size, other files as cards.
#[component]
fn Attachments(files: Vec<Attachment>) -> impl IntoView {
    let viewer = expect_context::<ImageViewer>();
    files
        .into_iter()
        .map(|file| {
            let url = format!("/files/{}", file.id);
            if file.thumb {
                let (width, height) = preview_size(file.width, file.height);
                let opened = file.clone();
                view! {
                    <button class="attachment-image" type="button" aria-label=format!("Open image {}", file.name)
                        on:click=move |_| viewer.0.set(Some(opened.clone()))>
                        <img src=format!("{url}/thumb") alt=file.name.clone() width=width height=height loading="lazy"/>
                    </button>
                }
                .into_any()
            } else {
                view! {
                    <a class="attachment-card" href=url download=file.name.clone()>
                        <svg viewBox="0 0 20 20" aria-hidden="true"><path d="M5 2.5h6l4 4v11H5zM11 2.5v4h4"/></svg>
                        <span class="attachment-name">{file.name.clone()}</span>
                        <span class="attachment-size">{format::file_size(file.size)}</span>
                    </a>
                }
                .into_any()
            }
        })
        .collect_view()
}

/// The preview's size on screen: at most 320 x 240, keeping the proportions.
fn preview_size(width: Option<u32>, height: Option<u32>) -> (u32, u32) {
    let (w, h) = (
        width.unwrap_or(320).max(1) as f64,
        height.unwrap_or(240).max(1) as f64,
    );
    let scale = (320.0 / w).min(240.0 / h).min(1.0);
    ((w * scale).round() as u32, (h * scale).round() as u32)
}

#[component]
fn RowView(row: Row, room: RoomState) -> impl IntoView {
    let state = expect_context::<ChatState>();
    let (item, header) = match row {
        Row::Day(label) => {
            return view! { <div class="day-separator" role="separator"><span>{label}</span></div> }
                .into_any()
        }
        Row::Gap { before } => {
            let load_newer = move |_| {
                state.request(ClientMsg::History {
                    room: room.id,
                    before_seq: before,
                    limit: Some(DEFAULT_PAGE),
                })
            };
            return view! {
                <div class="timeline-gap">
                    <button class="text-button" on:click=load_newer>"Load newer messages"</button>
                </div>
            }
            .into_any();
        }
        Row::Item { item, header } => (item, header),
    };
    if item.kind != MessageKind::Text {
        let target = item.target.as_ref().map_or("someone", |t| t.name.as_str());
        let line = match item.kind {
            MessageKind::Join => format!("{} joined", item.author.name),
            MessageKind::Leave => format!("{} left", item.author.name),
            MessageKind::Kick => format!("{target} was removed by {}", item.author.name),
            MessageKind::Ban => format!("{target} was banned by {}", item.author.name),
            _ => format!("{} created the room", item.author.name),
        };
        return view! {
            <div class="system-line">
                <span>{line}</span>
                <time class="system-time">{format::clock_time(item.ts)}</time>
            </div>
        }
        .into_any();
    }
    let mine = state.is_me(item.author.id);
    let time = format::clock_time(item.ts);
    let delivery = item.delivery.clone();
    let pending = delivery == Delivery::Pending;
    let failed = matches!(delivery, Delivery::Failed(_));
    let cmid = item.client_msg_id.clone();
    // Own stored messages can be deleted by their author, anyone's by the room's moderators.
    let deletable = item
        .seq
        .filter(|_| !item.deleted && delivery == Delivery::Sent && (mine || state.moderates(room.id)));
    let deleted = item.deleted;
    let edited = item.edited;
    // Authors edit their own stored messages in place.
    let editable = item
        .seq
        .filter(|_| mine && !deleted && delivery == Delivery::Sent);
    let editing = RwSignal::new(None::<String>);
    let original = item.text.clone();
    let seq = item.seq;
    let highlighted = move || seq.is_some() && room.highlight.get() == seq;
    // Mentions of this user are marked, and so is the message.
    let my_name = state
        .me
        .with_untracked(|me| me.as_ref().map(|me| me.name.clone()));
    let mentions_me = !mine
        && my_name
            .as_ref()
            .is_some_and(|name| crate::protocol::rules::mentions_name(&item.text, name));
    view! {
        <article class="message" class:mine=mine class:continued=!header class:pending=pending
            class:failed=failed class:highlighted=highlighted class:mentions-me=mentions_me
            id=seq.map(|s| format!("message-{}-{}", room.id.0, s.0))>
            <div class="message-gutter">
                {if header {
                    view! { <Avatar user=item.author.clone()/> }.into_any()
                } else {
                    view! { <time class="hover-time">{time.clone()}</time> }.into_any()
                }}
            </div>
            <div class="message-main">
                {header.then(|| view! {
                    <div class="message-head">
                        <span class="author">{item.author.name.clone()}</span>
                        {mine.then_some(view! { <span class="you-tag">"you"</span> })}
                        <time class="time">{time.clone()}</time>
                    </div>
                })}
                {move || editing.get().is_some().then(|| {
                    let save = move |ev: leptos::ev::SubmitEvent| {
                        ev.prevent_default();
                        if let (Some(seq), Some(text)) = (editable, editing.get_untracked()) {
                            state.edit_message(room.id, seq, text);
                        }
                        editing.set(None);
                    };
                    view! {
                        <form class="edit-form" on:submit=save>
                            <input type="text" aria-label="Edit message" maxlength="4000"
                                prop:value=move || editing.get().unwrap_or_default()
                                on:input=move |ev| editing.set(Some(event_target_value(&ev)))
                                on:keydown=move |ev| if ev.key() == "Escape" { editing.set(None) }/>
                            <button class="primary-button small" type="submit">"Save"</button>
                            <button class="text-button" type="button" on:click=move |_| editing.set(None)>"Cancel"</button>
                        </form>
                    }
                })}
                {if deleted {
                    view! { <p class="message-text deleted">"message deleted"</p> }.into_any()
                } else { view! {
                <p class="message-text">
                    {format::segments(&item.text).into_iter().map(|segment| match segment {
                        Segment::Text(text) => {
                            let marks: Vec<[u32; 2]> = my_name
                                .as_ref()
                                .map(|name| crate::protocol::rules::mentions(&text, &[name]).into_iter().map(|(range, _)| range).collect())
                                .unwrap_or_default();
                            format::marked(&text, &marks).into_iter().map(|(piece, mark)| {
                                if mark { view! { <mark class="mention">{piece}</mark> }.into_any() } else { piece.into_any() }
                            }).collect_view().into_any()
                        }
                        Segment::Link(url) => view! {
                            <a href=url.clone() target="_blank" rel="noopener noreferrer nofollow">{url.clone()}</a>
                        }.into_any(),
                    }).collect_view()}
                    {edited.then_some(view! { <span class="edited">" (edited)"</span> })}
                    {pending.then_some(view! {
                        <span class="delivery" role="img" aria-label="Sending" title="Sending">"◷"</span>
                    })}
                </p>
                }.into_any() }}
                {(!deleted && !item.attachments.is_empty()).then(|| view! {
                    <div class="attachments"><Attachments files=item.attachments.clone()/></div>
                })}
                {deletable.map(|seq| view! {
                    <div class="message-actions">
                        {editable.map(|_| view! {
                            <button class="text-button" type="button" aria-label="Edit message"
                                on:click=move |_| editing.set(Some(original.clone()))>"Edit"</button>
                        })}
                        <button class="text-button" type="button" aria-label="Delete message"
                            on:click=move |_| if confirm_delete() { state.delete_message(room.id, seq) }>"Delete"</button>
                    </div>
                })}
                {match (delivery, cmid) {
                    (Delivery::Failed(reason), Some(cmid)) => {
                        let retry_id = cmid.clone();
                        Some(view! {
                            <div class="failed-bar" role="alert">
                                <span>{format!("Not sent: {reason}")}</span>
                                <button class="text-button" on:click=move |_| state.retry(room.id, retry_id.clone())>"Retry"</button>
                                <button class="text-button" on:click=move |_| state.discard(room.id, &cmid)>"Discard"</button>
                            </div>
                        })
                    }
                    _ => None,
                }}
            </div>
        </article>
    }
    .into_any()
}

/// Scrolls the element with `id` to the middle of its scroller, after the next render.
fn scroll_into_view(id: &str) {
    #[cfg(feature = "hydrate")]
    {
        let id = id.to_owned();
        request_animation_frame(move || {
            if let Some(el) = document().get_element_by_id(&id) {
                let options = web_sys::ScrollIntoViewOptions::new();
                options.set_block(web_sys::ScrollLogicalPosition::Center);
                el.scroll_into_view_with_scroll_into_view_options(&options);
            }
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = id;
}

/// Asks before deleting (it cannot be undone).
fn confirm_delete() -> bool {
    #[cfg(feature = "hydrate")]
    {
        window()
            .confirm_with_message("Delete this message for everyone?")
            .unwrap_or(false)
    }
    #[cfg(not(feature = "hydrate"))]
    false
}

#[component]
fn TypingLine(room: RoomState) -> impl IntoView {
    view! {
        <div class="typing-line" aria-live="polite">{move || room.typing.with(|users| format::typing_sentence(users))}</div>
    }
}
