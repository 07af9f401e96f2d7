//! Drafts from the text so far, without a second model: prompt lookup (the
//! continuation of the last n-gram's most recent earlier occurrence) and an
//! n-gram map (each n-gram's most frequent successor, chained).

use crate::token::Token;
use std::collections::HashMap;

/// Prompt lookup: the tokens that followed the most recent earlier
/// occurrence of the last n-gram of `history` (the longest n in
/// `ngram` that has one), at most `limit` of them, or none when fewer than
/// `min` follow it.
pub(super) fn prompt_lookup(
    history: &[Token],
    ngram: (usize, usize),
    min: usize,
    limit: usize,
) -> Vec<Token> {
    if limit == 0 {
        return Vec::new();
    }
    for n in (ngram.0..=ngram.1).rev() {
        if history.len() <= n {
            continue;
        }
        let key = &history[history.len() - n..];
        // Most recent first; the occurrence must have a token after it.
        let found = (0..history.len() - n)
            .rev()
            .find(|&j| &history[j..j + n] == key);
        if let Some(j) = found {
            let draft: Vec<Token> = history[j + n..].iter().take(limit).copied().collect();
            if draft.len() >= min {
                return draft;
            }
        }
    }
    Vec::new()
}

/// Every n-gram of the text so far (for each n of a range) with how often
/// each token followed it; updated as the text grows, so a step costs the
/// new tokens, not the whole text.
#[derive(Debug, Clone, Default)]
pub(crate) struct NgramMap {
    /// Per n (index n - 1): each n-gram's successors, by the n-gram's hash
    /// (a collision can only cost a wrong draft, which verification
    /// rejects; a key of 8 bytes keeps the map at tens of bytes per token
    /// of text and n).
    maps: Vec<HashMap<u64, Successors>>,
    /// Tokens of the history already counted.
    seen: usize,
}

/// An n-gram's key in the map.
fn key(ngram: &[Token]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ngram.hash(&mut h);
    h.finish()
}

/// The tokens seen after an n-gram, with how often.
type Successors = Vec<(Token, u32)>;

/// Most distinct successors kept per n-gram (the most frequent win ties
/// with the newest): bounds the map's memory by the text's length.
const MAX_SUCCESSORS: usize = 8;

impl NgramMap {
    /// Counts the tokens of `history` not counted yet. `history` only
    /// grows; a shorter one (a new generation) starts the map over.
    fn update(&mut self, history: &[Token], max_n: usize) {
        if history.len() < self.seen || self.maps.len() != max_n {
            *self = NgramMap {
                maps: vec![HashMap::new(); max_n],
                seen: 0,
            };
        }
        for end in self.seen.max(1)..history.len() {
            // history[end] follows the n-grams ending at end - 1.
            let next = history[end];
            for n in 1..=max_n.min(end) {
                let key = key(&history[end - n..end]);
                let successors = self.maps[n - 1].entry(key).or_default();
                if let Some((_, count)) = successors.iter_mut().find(|(t, _)| *t == next) {
                    *count += 1;
                } else if successors.len() < MAX_SUCCESSORS {
                    successors.push((next, 1));
                } else if let Some(least) = successors.iter_mut().min_by_key(|(_, c)| *c) {
                    // Replace the least frequent.
                    *least = (next, 1);
                }
            }
        }
        self.seen = history.len();
    }

    /// Chains most frequent successors after `history`: at each step the
    /// longest n-gram (of `ngram`) the map knows, its successor seen at
    /// least `min_hits` times; stops where there is none. Fewer than `min`
    /// tokens is no draft.
    pub(super) fn draft(
        &mut self,
        history: &[Token],
        ngram: (usize, usize),
        min_hits: u32,
        min: usize,
        limit: usize,
    ) -> Vec<Token> {
        self.update(history, ngram.1);
        let mut text: Vec<Token> = history[history.len().saturating_sub(ngram.1)..].to_vec();
        let start = text.len();
        while text.len() - start < limit {
            let next = (ngram.0..=ngram.1.min(text.len())).rev().find_map(|n| {
                let successors = self.maps[n - 1].get(&key(&text[text.len() - n..]))?;
                let &(token, count) = successors.iter().max_by_key(|(_, c)| *c)?;
                (count >= min_hits).then_some(token)
            });
            match next {
                Some(token) => text.push(token),
                None => break,
            }
        }
        let draft = text.split_off(start);
        if draft.len() >= min {
            draft
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ids: &[i32]) -> Vec<Token> {
        ids.iter().map(|&i| Token(i)).collect()
    }

    #[test]
    fn lookup_follows_the_latest_longest_match() {
        // ... 1 2 3 9 9 ... 1 2 3 | the 3-gram "1 2 3" was followed by 9 9.
        let h = t(&[1, 2, 3, 9, 9, 4, 1, 2, 3]);
        assert_eq!(prompt_lookup(&h, (1, 3), 1, 3), t(&[9, 9, 4]));
        assert_eq!(prompt_lookup(&h, (1, 3), 1, 1), t(&[9]));
        // The most recent occurrence wins.
        let h = t(&[5, 7, 5, 8, 5]);
        assert_eq!(prompt_lookup(&h, (1, 3), 1, 10), t(&[8, 5]));
        // No match: nothing.
        assert!(prompt_lookup(&t(&[1, 2, 3]), (1, 3), 1, 10).is_empty());
        // Too short for the minimum.
        assert!(prompt_lookup(&t(&[4, 6, 4]), (1, 3), 3, 10).is_empty());
    }

    #[test]
    fn the_map_chains_the_most_frequent_successors() {
        let mut map = NgramMap::default();
        // After 5: 6 twice, 7 once; after 6: 5.
        let h = t(&[5, 6, 5, 6, 5, 7, 5]);
        assert_eq!(map.draft(&h, (1, 1), 1, 1, 4), t(&[6, 5, 6, 5]));
        // Two hits needed: 6 after 5 has them, 5 after 6 too.
        assert_eq!(map.draft(&h, (1, 1), 2, 1, 2), t(&[6, 5]));
        // Three: nothing.
        assert!(map.draft(&h, (1, 1), 3, 1, 2).is_empty());
        // With 2-grams, the longest known n-gram decides: "5 7" was
        // followed by 5 both times (after 5 alone, 6 and 7 tie).
        let h2 = t(&[5, 6, 5, 6, 5, 7, 5, 7, 5, 7]);
        assert_eq!(map.draft(&h2, (1, 2), 1, 1, 1), t(&[5]));
        // A shorter text starts over.
        assert!(map.draft(&t(&[1, 2]), (1, 2), 1, 1, 3).is_empty());
        assert_eq!(map.draft(&t(&[1, 2, 1]), (1, 2), 1, 1, 3), t(&[2, 1, 2]));
    }
}
