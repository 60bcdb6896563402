//! An external sort with bounded memory: items are sorted in runs of at most `run_len`, each
//! run beyond the first spilled to an anonymous temporary file (one JSON line per item), and
//! the runs merged. Used to list rows in key order when keys do not sort as ids do.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Items kept in memory at most per run.
pub const RUN_LEN: usize = 50_000;

/// Collects items, then gives them back in order.
pub struct Sorter<T> {
    run: Vec<T>,
    runs: Vec<File>,
    run_len: usize,
}

impl<T: Ord + Serialize + DeserializeOwned> Sorter<T> {
    pub fn new(run_len: usize) -> Self {
        Sorter {
            run: Vec::new(),
            runs: Vec::new(),
            run_len: run_len.max(1),
        }
    }

    pub fn push(&mut self, item: T) -> std::io::Result<()> {
        self.run.push(item);
        if self.run.len() >= self.run_len {
            self.spill()?;
        }
        Ok(())
    }

    /// Runs spilled to disk so far.
    pub fn spilled_runs(&self) -> usize {
        self.runs.len()
    }

    fn spill(&mut self) -> std::io::Result<()> {
        self.run.sort();
        let mut file = tempfile::tempfile()?;
        {
            let mut w = BufWriter::new(&mut file);
            for item in self.run.drain(..) {
                serde_json::to_writer(&mut w, &item)?;
                w.write_all(b"\n")?;
            }
            w.flush()?;
        }
        file.rewind()?;
        self.runs.push(file);
        Ok(())
    }

    /// Every item pushed, in order.
    pub fn finish(mut self) -> std::io::Result<Merged<T>> {
        if !self.runs.is_empty() && !self.run.is_empty() {
            self.spill()?;
        }
        self.run.sort();
        let mut readers: Vec<_> = self
            .runs
            .into_iter()
            .map(|f| BufReader::new(f).lines())
            .collect();
        let mut heap = BinaryHeap::new();
        for (i, r) in readers.iter_mut().enumerate() {
            if let Some(item) = next_item(r)? {
                heap.push(Reverse((item, i)));
            }
        }
        Ok(Merged {
            memory: self.run.into_iter(),
            readers,
            heap,
        })
    }
}

type Lines = std::io::Lines<BufReader<File>>;

fn next_item<T: DeserializeOwned>(r: &mut Lines) -> std::io::Result<Option<T>> {
    match r.next() {
        None => Ok(None),
        Some(line) => Ok(Some(serde_json::from_str(&line?)?)),
    }
}

/// The sorted items: from memory when nothing was spilled, else merged from the runs.
pub struct Merged<T> {
    memory: std::vec::IntoIter<T>,
    readers: Vec<Lines>,
    heap: BinaryHeap<Reverse<(T, usize)>>,
}

impl<T: Ord + DeserializeOwned> Iterator for Merged<T> {
    type Item = std::io::Result<T>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(item) = self.memory.next() {
            return Some(Ok(item));
        }
        let Reverse((item, i)) = self.heap.pop()?;
        match next_item(&mut self.readers[i]) {
            Ok(Some(next)) => self.heap.push(Reverse((next, i))),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        Some(Ok(item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_across_spilled_runs() {
        let mut s = Sorter::new(7);
        let items: Vec<(String, i64)> = (0..100i64)
            .map(|i| (format!("k{}", (i * 37) % 100), i))
            .collect();
        for it in items.clone() {
            s.push(it).unwrap();
        }
        assert_eq!(s.spilled_runs(), 14);
        let got: Vec<(String, i64)> = s.finish().unwrap().map(Result::unwrap).collect();
        let mut want = items;
        want.sort();
        assert_eq!(got, want);
        // Nothing spilled: straight from memory.
        let mut s = Sorter::new(10);
        for i in [3, 1, 2] {
            s.push(i).unwrap();
        }
        assert_eq!(
            s.finish()
                .unwrap()
                .map(Result::unwrap)
                .collect::<Vec<i32>>(),
            [1, 2, 3]
        );
    }
}
