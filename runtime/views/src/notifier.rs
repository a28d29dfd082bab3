//! The thread that sends the page-cache notifications of opens, getattrs and lookups and then
//! answers those requests.
//!
//! A notification (`FUSE_NOTIFY_STORE`, `FUSE_NOTIFY_INVAL_INODE`) is carried out in the
//! sender's own write to /dev/fuse, and the kernel makes it wait for the file's page locks. A
//! reader whose page is not in the cache (its first read after an invalidation, or after the
//! kernel or the reader itself dropped it: `posix_fadvise(DONTNEED)`, memory pressure) holds
//! that page's lock until the server answers its READ. Sent by the FUSE worker that handles an
//! open, the notification left the worker waiting for a READ that only a worker can answer:
//! with every worker in such a wait (one reader per worker was enough) every view of every
//! container stopped answering, for good (runtime/views/tests/serve.rs reproduces it).
//!
//! So workers never send: an open or getattr that needs a notification is handed here with
//! its reply and answered once the notification is done. The worker goes back to the queue at
//! once and answers the READ the notification waits for. Requests that need no notification
//! (the text the kernel already holds, the common case of a reader in a loop) are answered by
//! the worker without a hand-off. A getattr's reader waits for the answer before it reads, and
//! holds no page lock meanwhile. The kernel drops the answer's attributes when a notification
//! moved the inode's attribute version after it asked, which leaves them stale, not wrong: a
//! store grew the size to the text's, and after an invalidation the size stands until the
//! reader's read of the first page, answered with the shorter text after the invalidation,
//! shrinks it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use fuser::{
    FileAttr, FileHandle, FopenFlags, Generation, INodeNo, ReplyAttr, ReplyEntry, ReplyOpen,
};

use crate::fs::{Container, TTL};

/// What a store sends the kernel (decided by `Views::store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The text, which also grows the inode's size to its length.
    Store,
    /// Drop the inode's pages and attributes (a shorter text: a store cannot shrink).
    Inval,
    /// Drop, then store: the kernel's copy is not known.
    InvalStore,
    /// Nothing: the text is the one the notifications queued before it put there; answered
    /// after them, and cached only if they went through.
    Follow,
}

/// The request a text is stored for, answered once the kernel holds the text.
pub enum Answer {
    /// An open: `fh` is its handle, `cached` (shared with the server's handle table) is set
    /// when it is answered through the page cache, so its reads are answered from the text
    /// the kernel holds rather than from its own.
    Open {
        fh: u64,
        cached: Arc<AtomicBool>,
        reply: ReplyOpen,
    },
    /// A getattr (a reader's read found the attributes expired, or a stat): answered with
    /// `attr`, whose size becomes the length the kernel was given. The reader's read goes on
    /// after the answer and finds the new text in the page cache.
    Attr {
        attr: Box<FileAttr>,
        reply: ReplyAttr,
    },
    /// A lookup of a view whose copy in the kernel this server does not know (it took the
    /// connection over from a server before): answered with `attr`, whose size becomes the
    /// length of the text stored for it. Where the kernel has the inode, the invalidation
    /// before the store makes it discard these attributes and the store sets the size; where
    /// it has none yet, this size is the new inode's. Answered with a size of 0 before any
    /// store, the kernel cut the inode to it, and a reader in the middle of the text it held
    /// met its end early.
    Entry {
        attr: Box<FileAttr>,
        reply: ReplyEntry,
    },
}

/// A text to put in the kernel's page cache, and the request waiting for it.
pub struct Job {
    pub c: Arc<Container>,
    pub ino: INodeNo,
    pub node: usize,
    pub text: Arc<Vec<u8>>,
    /// The store decided for a view served through the page cache; `None`: the open uses
    /// direct I/O.
    pub store: Option<Notice>,
    pub answer: Answer,
}

impl Job {
    /// The answer. `cached`: the kernel holds this text, so an open's reads are served from
    /// the page cache; otherwise direct I/O, every read asks the server.
    fn answer(self, cached: bool) {
        match self.answer {
            Answer::Open {
                fh,
                cached: flag,
                reply,
            } => {
                let flags = if cached {
                    flag.store(true, Ordering::Release);
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::FOPEN_DIRECT_IO
                };
                reply.opened(FileHandle(fh), flags | FopenFlags::FOPEN_NOFLUSH);
            }
            Answer::Attr { mut attr, reply } => {
                attr.size = self.c.size(self.node);
                reply.attr(&TTL, &attr);
            }
            Answer::Entry { mut attr, reply } => {
                attr.size = self.c.size(self.node);
                reply.entry(&TTL, &attr, Generation(0));
            }
        }
    }

    /// Answered by the worker: the kernel holds this very text already.
    pub fn answer_cached(self) {
        self.answer(true);
    }

    /// Answered without notifications (no notifier thread): direct I/O, and the view's copy in
    /// the kernel is not known any more.
    pub fn answer_without_cache(self) {
        if let Some(notice) = self.store {
            self.c.after_send(self.node, notice, false);
        }
        self.answer(false);
    }
}

/// The queue to the notifier thread.
#[derive(Debug)]
pub struct Queue(mpsc::Sender<Job>);

impl Queue {
    /// Starts the thread that sends through `n`.
    pub fn start(n: fuser::Notifier) -> std::io::Result<Queue> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("eci-views-notify".into())
            .spawn(move || run(&n, rx))?;
        Ok(Queue(tx))
    }

    /// Hands `o` to the thread. Never blocks (callers hold a container's lock so that the
    /// thread sends the stores of one file in the order they were decided); the job comes
    /// back when the thread is gone.
    pub fn push(&self, o: Job) -> Result<(), Job> {
        self.0.send(o).map_err(|e| e.0)
    }
}

fn run(n: &fuser::Notifier, rx: mpsc::Receiver<Job>) {
    for o in rx {
        let cached = match o.store {
            Some(notice) => {
                let notice = o.c.before_send(o.node, notice, &o.text);
                let dropped = |()| o.c.dropped_for(o.node, &o.text);
                let sent = match notice {
                    Notice::Store => n.store(o.ino, 0, &o.text),
                    Notice::Inval => n.inval_inode(o.ino, 0, 0).map(dropped),
                    Notice::InvalStore => n
                        .inval_inode(o.ino, 0, 0)
                        .map(dropped)
                        .and_then(|()| n.store(o.ino, 0, &o.text)),
                    Notice::Follow => Ok(()),
                };
                o.c.after_send(o.node, notice, sent.is_ok())
            }
            None => false,
        };
        if !cached && matches!(o.answer, Answer::Open { .. }) {
            // sendfile and splice (busybox `cat`) read through the page cache up to the
            // inode's size, which direct I/O and a size of 0 do not change. Storing the last
            // byte makes the size at least the text's length; the page cache is dropped when
            // the open is answered (no FOPEN_KEEP_CACHE), and the short read that refills it
            // sets the size to exactly the text's length.
            if let Some(last) = o.text.len().checked_sub(1) {
                // A cached view's size answers getattr (a knob's is always 0, as in procfs).
                if n.store(o.ino, last as u64, &o.text[last..]).is_ok() && o.store.is_some() {
                    o.c.grew_to(o.node, o.text.len());
                }
            }
        }
        o.answer(cached);
    }
}
