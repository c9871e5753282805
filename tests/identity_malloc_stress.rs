//! malloc under work stealing with thread identity. A coroutine's copy of
//! the worker's TLS shares the worker's malloc state (tcache, arena); when
//! a coroutine moves to another worker, the copy must be re-targeted at the
//! new worker's, or two threads would use one tcache at once and corrupt
//! the heap. Here many coroutines allocate and free blocks of every size
//! class glibc has (tcache, fastbins, small and large bins, mmapped
//! chunks), keep them across yields, sleeps and migrations, free blocks
//! other coroutines allocated, and check every byte of what they kept.
//! A corrupted heap crashes the process or fails a check.

mod support;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use coroutines::Runtime;
use support::identity::{joined, on_runtime, os_thread};
use support::{errno, set_errno};

/// How long the stress runs.
const STRESS: Duration = Duration::from_secs(5);

/// Coroutines allocating at once: few enough that the workers run out of
/// work now and then and steal (with hundreds, both stay busy and hardly
/// ever steal).
const COROUTINES: u64 = 40;

/// The fewest migrations that make the run a test of malloc across
/// workers (a run makes thousands).
const MIN_MIGRATIONS: u64 = 50;

/// Blocks each coroutine keeps alive at a time.
const KEPT: usize = 24;

/// A small fast random number generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A size from one of glibc's allocation classes.
    fn size(&mut self) -> usize {
        let r = self.next();
        match r % 100 {
            0..=59 => 1 + (r >> 8) as usize % 64,     // tcache / fastbins
            60..=89 => 64 + (r >> 8) as usize % 1024, // small bins
            90..=98 => 1024 + (r >> 8) as usize % 64 * 1024, // large bins
            _ => 128 * 1024 + (r >> 8) as usize % (512 * 1024), // mmapped
        }
    }
}

/// A block whose contents follow from its seed, so that any byte changed
/// by a heap corruption is found.
enum Block {
    Bytes(u64, Vec<u8>),
    Words(u64, Box<[u64]>),
    Text(u64, String),
}

impl Block {
    fn new(rng: &mut Rng) -> Block {
        let seed = rng.next();
        let size = rng.size();
        match seed % 3 {
            0 => Block::Bytes(seed, (0..size).map(|i| byte(seed, i)).collect()),
            1 => Block::Words(
                seed,
                (0..size.div_ceil(8) as u64).map(|i| seed ^ i).collect(),
            ),
            _ => {
                let mut text = String::with_capacity(8);
                // Grows by reallocation through several size classes.
                for i in 0..size.min(4096) / 8 {
                    text.push_str(&format!("{:07x}.", (seed as usize + i) & 0xfff_ffff));
                }
                Block::Text(seed, text)
            }
        }
    }

    /// Checks the contents; returns a checksum of them.
    #[track_caller]
    fn check(&self) -> u64 {
        match self {
            Block::Bytes(seed, bytes) => {
                for (i, b) in bytes.iter().enumerate() {
                    assert_eq!(
                        *b,
                        byte(*seed, i),
                        "byte {i} of a {}-byte block",
                        bytes.len()
                    );
                }
                *seed ^ bytes.len() as u64
            }
            Block::Words(seed, words) => {
                for (i, w) in words.iter().enumerate() {
                    assert_eq!(*w, seed ^ i as u64, "word {i} of {}", words.len());
                }
                seed.wrapping_add(words.len() as u64)
            }
            Block::Text(seed, text) => {
                for (i, chunk) in text.as_bytes().chunks(8).enumerate() {
                    let want = format!("{:07x}.", (*seed as usize + i) & 0xfff_ffff);
                    assert_eq!(chunk, want.as_bytes(), "chunk {i} of a string");
                }
                seed.rotate_left(7) ^ text.len() as u64
            }
        }
    }
}

fn byte(seed: u64, i: usize) -> u8 {
    (seed as usize).wrapping_add(i.wrapping_mul(31)) as u8
}

/// Coroutines whose [`Farewell`] ran, and those whose destructor saw its
/// own thread-locals.
static FAREWELLS: AtomicU64 = AtomicU64::new(0);
static FAREWELLS_AT_HOME: AtomicU64 = AtomicU64::new(0);

/// A thread-local whose destructor runs where the coroutine ended, after
/// it may have moved many times: the allocation it frees was made on
/// another worker.
struct Farewell(RefCell<Option<(u64, Vec<u64>)>>);

impl Drop for Farewell {
    fn drop(&mut self) {
        if let Some((index, words)) = self.0.borrow_mut().take() {
            FAREWELLS.fetch_add(1, Ordering::SeqCst);
            let intact = words
                .iter()
                .enumerate()
                .all(|(i, w)| *w == index ^ i as u64);
            if intact && OWNER.with(Cell::get) == index {
                FAREWELLS_AT_HOME.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

thread_local! {
    static FAREWELL: Farewell = const { Farewell(RefCell::new(None)) };
    /// Blocks kept in the coroutine's own thread-local, across migrations.
    static HOARD: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
    static OWNER: Cell<u64> = const { Cell::new(u64::MAX) };
}

/// What a coroutine reports.
#[derive(Default)]
struct Report {
    /// Blocks checked and freed.
    checked: u64,
    checksum: u64,
    /// Times it found itself on another kernel thread after a wait.
    moves: u64,
}

/// One coroutine's work: allocate, keep, check and free until `deadline`;
/// pass some blocks to the next coroutine and free what the previous one
/// passed (a free on another worker than the allocation).
fn stress(
    index: u64,
    deadline: Instant,
    give: mpsc::Sender<Block>,
    take: Arc<Mutex<mpsc::Receiver<Block>>>,
) -> Report {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (index + 1).wrapping_mul(0x1000_0001));
    let me = thread::current().id();
    OWNER.with(|o| o.set(index));
    FAREWELL.with(|f| *f.0.borrow_mut() = Some((index, (0..1000).map(|i| index ^ i).collect())));
    let mut kept: VecDeque<Block> = VecDeque::new();
    let mut report = Report::default();
    let mut kernel_thread = os_thread();
    let mut round = 0u64;
    while Instant::now() < deadline {
        round += 1;
        kept.push_back(Block::new(&mut rng));
        if kept.len() > KEPT {
            let block = kept.pop_front().unwrap();
            report.checksum = report.checksum.wrapping_add(block.check());
            report.checked += 1;
        }
        match rng.next() % 16 {
            0 => HOARD.with(|h| h.borrow_mut().push(Block::new(&mut rng))),
            1 => {
                if let Some(block) = HOARD.with(|h| h.borrow_mut().pop()) {
                    report.checksum = report.checksum.wrapping_add(block.check());
                    report.checked += 1;
                }
            }
            2 => {
                let _ = give.send(Block::new(&mut rng));
            }
            3 => {
                let passed = take.lock().unwrap().try_recv();
                if let Ok(block) = passed {
                    report.checksum = report.checksum.wrapping_add(block.check());
                    report.checked += 1;
                }
            }
            _ => {}
        }
        // Waits, after which the coroutine may resume on the other worker.
        set_errno(1000 + index as i32);
        match rng.next() % 8 {
            0..=1 => thread::sleep(Duration::from_micros(rng.next() % 1000)),
            2..=5 => coroutines::yield_now(),
            6 if round.is_multiple_of(8) => {
                // Hogging the worker a little without yielding gives the
                // other worker a reason to steal the queue behind us.
                let until = Instant::now() + Duration::from_micros(300);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            }
            _ => continue,
        }
        let now = os_thread();
        if now != kernel_thread {
            report.moves += 1;
            kernel_thread = now;
        }
        // Its identity moved with it.
        assert_eq!(
            thread::current().id(),
            me,
            "coroutine {index}'s ThreadId after a move"
        );
        assert_eq!(
            OWNER.with(Cell::get),
            index,
            "coroutine {index}'s thread-local after a move"
        );
        assert_eq!(
            errno(),
            1000 + index as i32,
            "coroutine {index}'s errno after a move"
        );
    }
    for block in kept
        .drain(..)
        .chain(HOARD.with(|h| std::mem::take(&mut *h.borrow_mut())))
    {
        report.checksum = report.checksum.wrapping_add(block.check());
        report.checked += 1;
    }
    report
}

#[test]
fn malloc_heavy_coroutines_migrating_between_two_workers() {
    let builder = Runtime::builder().workers(2).work_stealing(true);
    let (reports, stats) = on_runtime(builder, STRESS + Duration::from_secs(20), |runtime| {
        let deadline = Instant::now() + STRESS;
        // A ring of channels: coroutine i gives to i + 1's receiver.
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..COROUTINES).map(|_| mpsc::channel::<Block>()).unzip();
        let receivers: Vec<_> = receivers
            .into_iter()
            .map(|r| Arc::new(Mutex::new(r)))
            .collect();
        let handles: Vec<_> = (0..COROUTINES)
            .map(|i| {
                let give = senders[((i + 1) % COROUTINES) as usize].clone();
                let take = receivers[i as usize].clone();
                runtime.spawn(move || stress(i, deadline, give, take))
            })
            .collect();
        drop(senders);
        let reports: Vec<Report> = handles.into_iter().map(joined).collect();
        // Blocks still in the channels are freed here, on a plain thread.
        for receiver in receivers {
            for block in receiver.lock().unwrap().try_iter() {
                block.check();
            }
        }
        (reports, runtime.stats())
    });
    let checked: u64 = reports.iter().map(|r| r.checked).sum();
    let moves: u64 = reports.iter().map(|r| r.moves).sum();
    assert!(
        checked > COROUTINES * 10,
        "only {checked} blocks were checked"
    );
    assert!(
        stats.migrations >= MIN_MIGRATIONS && moves > 0,
        "too few migrations ({} migrations, {moves} moves seen): the test did not test \
         malloc across workers",
        stats.migrations
    );
    // Thread-local destructors ran once per coroutine, wherever it ended,
    // with its own thread-locals. (Waited for: join may return first.)
    let deadline = Instant::now() + Duration::from_secs(2);
    while FAREWELLS.load(Ordering::SeqCst) < COROUTINES && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        FAREWELLS.load(Ordering::SeqCst),
        COROUTINES,
        "destructors that ran"
    );
    assert_eq!(
        FAREWELLS_AT_HOME.load(Ordering::SeqCst),
        COROUTINES,
        "destructors that saw their coroutine's thread-locals and data intact"
    );
    // Every block was checked byte by byte; the checksums only make sure
    // the checks were not optimised away.
    assert_ne!(reports.iter().fold(0u64, |a, r| a ^ r.checksum), 0);
}
