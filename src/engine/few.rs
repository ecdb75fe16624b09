//! [`Few`]: a list that holds its first item in place and allocates only for a second.

/// A list of what a critical section leaves to do after the lock (wake-ups, mostly), where
/// there is mostly one item or none: the first is kept in place, so that a slot's call,
/// whose record lives on its stack, allocates nothing for it; only a second item goes
/// to a `Vec`.
///
/// # Dropping
///
/// Drops the items it still holds.
pub(crate) struct Few<T> {
    /// Empty only if `more` is empty too.
    first: Option<T>,
    /// Made at the second push (`None` costs one word to make, a `Vec` three).
    more: Option<Vec<T>>,
}

impl<T> Few<T> {
    pub(crate) const fn new() -> Self {
        Few {
            first: None,
            more: None,
        }
    }

    pub(crate) fn push(&mut self, item: T) {
        if self.first.is_none() {
            self.first = Some(item);
        } else {
            self.more.get_or_insert_with(Vec::new).push(item);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// Whether it holds nothing and never allocated: such a list need not be dropped.
    pub(crate) fn untouched(&self) -> bool {
        self.first.is_none() && self.more.is_none()
    }

    /// Takes every item, in the order pushed, and hands each to `f`; the list is empty
    /// after (it keeps its buffer, if it has one). If `f` panics, the items not handed
    /// over yet are dropped.
    #[inline(always)]
    pub(crate) fn take_each(&mut self, mut f: impl FnMut(T)) {
        let Some(first) = self.first.take() else {
            return;
        };
        match &mut self.more {
            Some(more) if !more.is_empty() => take_spilled(first, more, f),
            _ => f(first),
        }
    }
}

/// [`Few::take_each`] with items beyond the first (rare: kept out of the callers' code).
#[cold]
#[inline(never)]
fn take_spilled<T>(first: T, more: &mut Vec<T>, mut f: impl FnMut(T)) {
    // Begun before `f` is called: if it panics on the first item, the drain's drop drops
    // the rest as it unwinds (none is left behind an empty first place).
    let rest = more.drain(..);
    f(first);
    rest.for_each(f);
}

impl<T> Default for Few<T> {
    fn default() -> Self {
        Few::new()
    }
}

impl<T> Extend<T> for Few<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, items: I) {
        for item in items {
            self.push(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Few;

    #[test]
    fn keeps_the_order_pushed_and_allocates_only_for_a_second_item() {
        let mut few = Few::new();
        assert!(few.is_empty() && few.untouched());
        few.push(1);
        assert!(!few.is_empty() && !few.untouched());
        assert!(few.more.is_none(), "one item is kept in place");
        assert_eq!(taken(&mut few), [1]);
        assert!(few.is_empty() && few.untouched());

        few.extend([1, 2, 3]);
        few.extend(None);
        assert_eq!(taken(&mut few), [1, 2, 3]);
        assert!(few.is_empty());
        // Emptied, but it owns a buffer: it must be dropped.
        assert!(!few.untouched());
        few.push(4);
        few.push(5);
        assert_eq!(taken(&mut few), [4, 5]);
    }

    #[test]
    fn a_panic_while_taking_still_empties_the_list() {
        let mut few = Few::new();
        few.extend([1, 2, 3]);
        let mut seen = Vec::new();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            few.take_each(|i| {
                seen.push(i);
                assert!(i < 2, "a waker that panics");
            })
        }));
        assert!(panicked.is_err());
        assert_eq!(seen, [1, 2]);
        assert!(few.is_empty());
        few.push(7);
        assert_eq!(taken(&mut few), [7]);
    }

    /// Found by a review of a8d61ce: a panic on the first item left the others in the
    /// list behind an empty first place (the list then looked empty, and they were never
    /// handed over).
    #[test]
    fn a_panic_on_the_first_item_drops_the_rest() {
        use std::rc::Rc;
        let alive = Rc::new(());
        let mut few = Few::new();
        few.extend([Rc::clone(&alive), Rc::clone(&alive), Rc::clone(&alive)]);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            few.take_each(|_item| panic!("a waker that panics"))
        }));
        assert!(panicked.is_err());
        assert!(few.is_empty());
        assert!(
            few.more.as_ref().is_none_or(Vec::is_empty),
            "{} item(s) left behind an empty first place",
            few.more.as_ref().map_or(0, Vec::len)
        );
        assert_eq!(
            Rc::strong_count(&alive),
            1,
            "the items not handed over are dropped"
        );
    }

    fn taken(few: &mut Few<i32>) -> Vec<i32> {
        let mut out = Vec::new();
        few.take_each(|i| out.push(i));
        out
    }
}
