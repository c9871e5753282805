//! Every live coroutine of a runtime, from its spawn to its end: so that
//! none is lost at shutdown, and for dumps.

use std::sync::Arc;

use crate::coroutine::Task;
use crate::sync::SpinLock;

/// Live coroutines, sharded by the worker that spawned them so that a
/// worker's inserts and removals mostly stay on its own shard.
pub(crate) struct Registry {
    shards: Box<[SpinLock<Slab>]>,
}

#[derive(Default)]
struct Slab {
    slots: Vec<Option<Arc<Task>>>,
    free: Vec<usize>,
}

/// Where a task sits in the registry: shard in the high half, slot in the low.
pub(crate) type Slot = u64;

impl Registry {
    pub(crate) fn new(shards: usize) -> Registry {
        Registry {
            shards: (0..shards)
                .map(|_| SpinLock::new(Slab::default()))
                .collect(),
        }
    }

    pub(crate) fn insert(&self, shard: usize, task: Arc<Task>) -> Slot {
        let mut slab = self.shards[shard].lock();
        let index = match slab.free.pop() {
            Some(index) => {
                slab.slots[index] = Some(task);
                index
            }
            None => {
                slab.slots.push(Some(task));
                slab.slots.len() - 1
            }
        };
        ((shard as u64) << 32) | index as u64
    }

    /// Removes the task at `slot`; nothing if `drain` took it.
    pub(crate) fn remove(&self, slot: Slot) -> Option<Arc<Task>> {
        let (shard, index) = ((slot >> 32) as usize, (slot as u32) as usize);
        let mut slab = self.shards[shard].lock();
        let task = slab.slots.get_mut(index)?.take();
        if task.is_some() {
            slab.free.push(index);
        }
        task
    }

    /// Every registered task, each under its shard's lock.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Arc<Task>)) {
        for shard in self.shards.iter() {
            shard.lock().slots.iter().flatten().for_each(&mut f);
        }
    }

    /// Removes and returns every registered task.
    pub(crate) fn drain(&self) -> Vec<Arc<Task>> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let mut slab = shard.lock();
            all.extend(slab.slots.drain(..).flatten());
            slab.free.clear();
        }
        all
    }
}
