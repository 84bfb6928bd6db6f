//! Full-text search: turning what a person typed into the engine's query (FTS5 on SQLite,
//! tsquery on PostgreSQL), the ranked and filtered read, and where the words matched.

use super::{AnyRow, Backend, Store, StoreResult};
use crate::protocol::{RoomId, SearchHit, Seq, Timestamp, UserId, UserRef, SEARCH_PAGE};
use sqlx::Row;

/// Most words of a query that count; longer queries are cut.
const MAX_TERMS: usize = 8;
/// Longest word that counts (characters).
const MAX_TERM_CHARS: usize = 64;

/// What to search for and where.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub text: String,
    pub room: Option<RoomId>,
    pub author: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub page: u32,
}

/// The words of a query, lower-cased: runs of letters and digits. Everything else (quotes,
/// operators, punctuation) separates words, so no input can inject query syntax.
pub fn terms(query: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in query.split(|c: char| !c.is_alphanumeric()) {
        let word: String = word
            .chars()
            .take(MAX_TERM_CHARS)
            .collect::<String>()
            .to_lowercase();
        if !word.is_empty() && !terms.contains(&word) {
            terms.push(word);
        }
        if terms.len() == MAX_TERMS {
            break;
        }
    }
    terms
}

/// The words of `text` that start with one of `terms` (as the engines match: a prefix of a
/// word, ignoring case): `[start, end)` in characters, ascending.
pub fn highlights(text: &str, terms: &[String]) -> Vec<[u32; 2]> {
    let chars: Vec<char> = text.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && chars[i].is_alphanumeric() {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect::<String>().to_lowercase();
        if terms.iter().any(|term| word.starts_with(term.as_str())) {
            found.push([start as u32, i as u32]);
        }
    }
    found
}

impl Backend {
    /// The engine's query for `terms`: every word must occur, each as a word prefix.
    fn match_expression(self, terms: &[String]) -> String {
        match self {
            Backend::Sqlite => terms
                .iter()
                .map(|t| format!("\"{t}\"*"))
                .collect::<Vec<_>>()
                .join(" "),
            Backend::Postgres => terms
                .iter()
                .map(|t| format!("{t}:*"))
                .collect::<Vec<_>>()
                .join(" & "),
        }
    }

    /// The engine's query for a name: its words in order, whole (a phrase).
    pub(super) fn phrase_expression(self, terms: &[String]) -> String {
        match self {
            Backend::Sqlite => format!("\"{}\"", terms.join(" ")),
            Backend::Postgres => terms.join(" <-> "),
        }
    }

    /// Live text messages in rooms `$1` (a user) is a member of, read from `source`, that
    /// pass `filter`; unordered. The message's id comes first.
    fn hits_select(source: &str, filter: &str) -> String {
        format!(
            "SELECT m.id, m.room_id, m.seq, m.author_id, u.name AS author_name, m.body, m.created_at
             FROM {source}
             JOIN memberships ms ON ms.room_id = m.room_id AND ms.user_id = $1
             JOIN users u ON u.id = m.author_id
             WHERE {filter} AND m.deleted_at IS NULL AND m.kind = 'text'"
        )
    }

    /// [`Backend::hits_select`] of the messages whose text the engine's index matches with
    /// the query `$2` (on SQLite, of those up to `search_progress.indexed_upto`), and `condition`.
    fn indexed_hits(self, condition: &str) -> String {
        match self {
            Backend::Sqlite => Self::hits_select(
                "messages_fts f JOIN messages m ON m.id = f.rowid",
                &format!("messages_fts MATCH $2 AND {condition}"),
            ),
            Backend::Postgres => Self::hits_select(
                "messages m",
                &format!("m.search @@ to_tsquery('huddle', $2) AND {condition}"),
            ),
        }
    }

    /// Search hits ranked, with the filters `$3` room (0: any), `$4` author name key ('':
    /// anyone), `$5..$6` time range, paged by `$7` limit and `$8` offset.
    fn search_sql(self) -> String {
        let rank = match self {
            Backend::Sqlite => "bm25(messages_fts)",
            Backend::Postgres => "-ts_rank(m.search, to_tsquery('huddle', $2))",
        };
        let hits = self.indexed_hits(
            "($3 = 0 OR m.room_id = $3) AND ($4 = '' OR u.name_key = $4)
               AND m.created_at >= $5 AND m.created_at < $6",
        );
        format!("{hits} ORDER BY {rank}, m.id DESC LIMIT $7 OFFSET $8")
    }

    /// Messages of others that may mention `$1` (their name's words in order, `$2`), newest
    /// first, at most `$4`; with `$3` = 1 only those after the user's read mark.
    pub(super) fn mention_sql(self) -> String {
        let condition = "m.author_id != $1 AND m.seq > CASE WHEN $3 = 1 THEN ms.last_read_seq ELSE 0 END";
        let indexed = self.indexed_hits(condition);
        match self {
            // Messages newer than the index (about a second's worth: it is brought up to date
            // at least once a second) are read from the table, in the same statement and so
            // the same snapshot. A sign-in counting its mentions then never waits for an
            // indexing commit, nor makes one: in a reconnect storm that was a commit per
            // sign-in. Only text with an `@` can mention anyone.
            // `recent` is read by id first: joined from the memberships side, SQLite would
            // walk each room's whole history by seq.
            Backend::Sqlite => {
                let recent = Self::hits_select("recent m", condition);
                format!(
                    "WITH recent AS MATERIALIZED (
                         SELECT * FROM messages
                         WHERE id > (SELECT indexed_upto FROM search_progress) AND body LIKE '%@%'
                     )
                     SELECT * FROM ({indexed} UNION ALL {recent}) ORDER BY id DESC LIMIT $4"
                )
            }
            Backend::Postgres => format!("{indexed} ORDER BY m.id DESC LIMIT $4"),
        }
    }
}

impl Store {
    /// One page of search results for `user`, and whether more follow.
    pub async fn search(&self, user: UserId, query: &SearchQuery) -> StoreResult<(Vec<SearchHit>, bool)> {
        let terms = terms(&query.text);
        if terms.is_empty() {
            return Ok((Vec::new(), false));
        }
        self.catch_up_search().await?;
        let rows = sqlx::query(&self.backend.search_sql())
            .bind(user.0)
            .bind(self.backend.match_expression(&terms))
            .bind(query.room.map_or(0, |r| r.0))
            .bind(query.author.as_deref().map(super::name_key).unwrap_or_default())
            .bind(query.since.unwrap_or(0))
            .bind(query.until.unwrap_or(i64::MAX))
            .bind(i64::from(SEARCH_PAGE) + 1)
            .bind(i64::from(query.page) * i64::from(SEARCH_PAGE))
            .fetch_all(&self.reads)
            .await?;
        let has_more = rows.len() > SEARCH_PAGE as usize;
        let hits = rows
            .iter()
            .take(SEARCH_PAGE as usize)
            .map(|row| hit_from_row(row, &terms))
            .collect();
        Ok((hits, has_more))
    }
}

/// Most candidate messages a mention count or list reads.
const MENTION_CANDIDATES: i64 = 1000;
/// Mentions a `mentions` list shows.
const MENTIONS_SHOWN: usize = 50;

impl Store {
    /// Messages of others that mention `user`, newest first, found by the name's words and
    /// confirmed by the mention rule (`@` + name, not in code), as search hits marking the
    /// mention. `unread_only`: only after the user's read mark in each room.
    async fn mentions_found(&self, user: &UserRef, unread_only: bool) -> StoreResult<Vec<SearchHit>> {
        let words = terms(&user.name);
        if words.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&self.backend.mention_sql())
            .bind(user.id.0)
            .bind(self.backend.phrase_expression(&words))
            .bind(i64::from(unread_only))
            .bind(MENTION_CANDIDATES)
            .fetch_all(&self.reads)
            .await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let text: String = row.get("body");
                let marks: Vec<[u32; 2]> = crate::protocol::rules::mentions(&text, &[&user.name])
                    .into_iter()
                    .map(|(range, _)| range)
                    .collect();
                (!marks.is_empty()).then(|| SearchHit {
                    highlights: marks,
                    ..hit_from_row(row, &[])
                })
            })
            .collect())
    }

    /// Unread mentions of `user` per room.
    pub async fn unread_mentions(
        &self,
        user: &UserRef,
    ) -> StoreResult<std::collections::HashMap<RoomId, u32>> {
        let mut counts = std::collections::HashMap::new();
        for hit in self.mentions_found(user, true).await? {
            *counts.entry(hit.room).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// The newest messages that mention `user`, in rooms they are in.
    pub async fn mentions_of(&self, user: &UserRef) -> StoreResult<Vec<SearchHit>> {
        let mut hits = self.mentions_found(user, false).await?;
        hits.truncate(MENTIONS_SHOWN);
        Ok(hits)
    }
}

fn hit_from_row(row: &AnyRow, terms: &[String]) -> SearchHit {
    let text: String = row.get("body");
    SearchHit {
        room: RoomId(row.get("room_id")),
        seq: Seq(row.get("seq")),
        author: UserRef {
            id: UserId(row.get("author_id")),
            name: row.get("author_name"),
        },
        ts: row.get("created_at"),
        highlights: highlights(&text, terms),
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_words_are_letters_and_digits_only() {
        assert_eq!(
            terms("  Hello, \"world\" OR NEAR(x*) -- ; DROP"),
            ["hello", "world", "or", "near", "x", "drop"]
        );
        assert_eq!(terms("café 42 café"), ["café", "42"]);
        assert!(terms("\"*:&|!()").is_empty());
        assert_eq!(terms("a b c d e f g h i j").len(), MAX_TERMS);
    }

    #[test]
    fn highlights_mark_words_starting_with_a_term_in_characters() {
        let terms = terms("deplo rust");
        assert_eq!(
            highlights("Deploying Rust, trust me: rusty deploy", &terms),
            [[0, 9], [10, 14], [26, 31], [32, 38]]
        );
        // Offsets count characters, not bytes.
        assert_eq!(highlights("ünïcode «rust»", &terms), [[9, 13]]);
        assert!(highlights("nothing here", &terms).is_empty());
    }

    #[test]
    fn engine_queries_quote_every_word() {
        let terms = terms("ship it");
        assert_eq!(Backend::Sqlite.match_expression(&terms), "\"ship\"* \"it\"*");
        assert_eq!(Backend::Postgres.match_expression(&terms), "ship:* & it:*");
    }
}
