//! The count-only listing: runs ahead of the copy over the rest of a shard's range and counts
//! the selected keys and bytes, holding nothing, so the shard's total (and with it percent and
//! ETA) is known long before its listing, paced by the copy, reaches the end.

use ferry_core::{Selector, Totals};
use futures::StreamExt;

use crate::error::TransferError;
use crate::stores::Listing;

/// Counts the selected keys of `listing` and their bytes, on top of `base`.
pub async fn census(
    mut listing: Listing,
    selector: Selector,
    base: Totals,
) -> Result<Totals, TransferError> {
    let mut t = base;
    while let Some(item) = listing.next().await {
        let info = item?;
        if selector.selects(&info.key, info.size, info.modified) {
            t.objects += 1;
            t.bytes += info.size;
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stores::{MemoryStore, Source};
    use ferry_core::select::Selection;

    #[tokio::test]
    async fn counts_selected_keys_past_the_start_on_top_of_the_base() {
        let s = MemoryStore::new();
        for (k, v) in [("a", "1"), ("b", "22"), ("c.tmp", "333"), ("d", "4444")] {
            s.insert(k, v.as_bytes().to_vec());
        }
        let selector = Selector::new(&Selection {
            exclude: vec!["*.tmp".into()],
            ..Default::default()
        })
        .unwrap();
        let base = Totals {
            objects: 1,
            bytes: 1,
        };
        let t = census(s.list(Some("a".into()), None), selector, base)
            .await
            .unwrap();
        assert_eq!(
            t,
            Totals {
                objects: 3,
                bytes: 7
            }
        );
    }
}
