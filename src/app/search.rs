//! The search panel: a query with optional filters (this room, author, recent days), ranked
//! results with the matched words marked (as text, never HTML), more pages on demand, and a
//! click that opens the room at the message.

use super::format;
use super::state::ChatState;
use super::Avatar;
use crate::protocol::SearchHit;
use leptos::prelude::*;

#[component]
pub fn SearchPanel() -> impl IntoView {
    let state = expect_context::<ChatState>();
    let search = state.search;
    let input = NodeRef::<leptos::html::Input>::new();
    // Focus the query box whenever the panel opens.
    Effect::new(move |_| {
        if search.open.get() {
            if let Some(el) = input.get() {
                let _ = el.focus();
            }
        }
    });
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        state.run_search(0);
    };
    let summary = move || {
        if search.mentions_mode.get() {
            let n = search.hits.with(|h| h.len()) as u32;
            return Some(match n {
                0 => "Nobody has mentioned you yet.".to_owned(),
                1 => "1 message mentions you".to_owned(),
                n => format!("{n} messages mention you"),
            });
        }
        search.answered.get().map(|query| {
            let n = search.hits.with(|h| h.len());
            match (n, search.has_more.get()) {
                (0, _) => format!("No messages match “{query}”."),
                (n, true) => format!("{n}+ results for “{query}”"),
                (n, false) => format!("{} for “{query}”", format::count(n as u32, "result", "results")),
            }
        })
    };
    view! {
        <aside class="search-panel" id="search" aria-label="Search">
            <div class="members-head">
                <h2 class="section-title">{move || if search.mentions_mode.get() { "Mentions" } else { "Search" }}</h2>
                <button class="icon-button" aria-label="Close search" on:click=move |_| search.open.set(false)>"×"</button>
            </div>
            <Show when=move || search.mentions_mode.get()>
                <button class="text-button back-to-search" type="button" on:click=move |_| {
                    search.mentions_mode.set(false);
                    search.hits.set(Vec::new());
                }>"Search messages instead"</button>
            </Show>
            <form class="search-form" role="search" on:submit=submit class:hidden=move || search.mentions_mode.get()>
                <input type="search" node_ref=input aria-label="Search messages" placeholder="Search messages"
                    maxlength="200" prop:value=move || search.query.get()
                    on:input=move |ev| search.query.set(event_target_value(&ev))
                    on:keydown=move |ev| if ev.key() == "Escape" { search.open.set(false) }/>
                <div class="search-filters">
                    <label class="check">
                        <input type="checkbox" prop:checked=move || search.this_room.get()
                            on:change=move |ev| search.this_room.set(event_target_checked(&ev))/>
                        "This room only"
                    </label>
                    <input type="text" aria-label="From (name)" placeholder="From (name)" maxlength="30"
                        prop:value=move || search.author.get()
                        on:input=move |ev| search.author.set(event_target_value(&ev))/>
                    <select aria-label="When" on:change=move |ev| {
                        search.within_days.set(event_target_value(&ev).parse().unwrap_or(0))
                    }>
                        <option value="0" selected=move || search.within_days.get() == 0>"Any time"</option>
                        <option value="1" selected=move || search.within_days.get() == 1>"Last 24 hours"</option>
                        <option value="7" selected=move || search.within_days.get() == 7>"Last 7 days"</option>
                        <option value="30" selected=move || search.within_days.get() == 30>"Last 30 days"</option>
                    </select>
                </div>
                <button class="primary-button small" type="submit"
                    disabled=move || search.query.with(|q| q.trim().is_empty())>"Search"</button>
            </form>
            <p class="search-summary" role="status">{summary}</p>
            <ol class="search-results" aria-label="Search results">
                <For each=move || search.hits.get() key=|hit| (hit.room, hit.seq) let:hit>
                    <Hit hit=hit/>
                </For>
            </ol>
            <Show when=move || search.has_more.get()>
                <button class="text-button more-results" disabled=move || search.searching.get()
                    on:click=move |_| state.run_search(search.page.get_untracked() + 1)>
                    {move || if search.searching.get() { "Searching…" } else { "More results" }}
                </button>
            </Show>
        </aside>
    }
}

/// One result: where and who, then the text with the matched words marked.
#[component]
fn Hit(hit: SearchHit) -> impl IntoView {
    let state = expect_context::<ChatState>();
    let room_name = state
        .room(hit.room)
        .map(|r| {
            r.info.with_untracked(|i| match i.kind {
                crate::protocol::RoomKind::Direct => i.name.clone(),
                _ => format!("# {}", i.name),
            })
        })
        .unwrap_or_default();
    let (room, seq) = (hit.room, hit.seq);
    let open = move |_| {
        state.jump_to(room, seq);
        // On a phone the panel covers the conversation: get out of the way.
        if narrow_screen() {
            state.search.open.set(false);
        }
    };
    let label = format!("{} in {room_name}: {}", hit.author.name, hit.text);
    view! {
        <li>
            <button class="search-hit" type="button" aria-label=label on:click=open>
                <span class="search-hit-head">
                    <Avatar user=hit.author.clone() small=true/>
                    <span class="author">{hit.author.name.clone()}</span>
                    <span class="search-hit-room">{room_name}</span>
                    <time class="time">{format::day_label(hit.ts, super::state::now_ms())}" "{format::clock_time(hit.ts)}</time>
                </span>
                <span class="search-hit-text">
                    {format::marked(&hit.text, &hit.highlights).into_iter().map(|(text, mark)| {
                        if mark { view! { <mark>{text}</mark> }.into_any() } else { text.into_any() }
                    }).collect_view()}
                </span>
            </button>
        </li>
    }
}

fn narrow_screen() -> bool {
    #[cfg(feature = "hydrate")]
    {
        window()
            .inner_width()
            .ok()
            .and_then(|w| w.as_f64())
            .is_some_and(|w| w <= 1000.0)
    }
    #[cfg(not(feature = "hydrate"))]
    false
}
