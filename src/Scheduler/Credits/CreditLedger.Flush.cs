namespace Potluck.Scheduler.Credits;

/// <summary>
/// The group commit's flush, outside the writer's lock. A group commit (<see cref="Settle"/>, <see cref="Record"/>,
/// <see cref="RecordEarned"/>, the chain's own blocks) commits with <c>synchronous=NORMAL</c> (its WAL frames written, not
/// yet flushed) and releases the writer's lock; the WAL file is then flushed (<c>fsync</c> through a handle of the ledger's
/// own on <c>ledger.db-wal</c>: an fsync flushes the file's data whichever descriptor wrote it, as PostgreSQL's checkpointer
/// relies on), and only then do its callers return. Writers arriving meanwhile take the lock and form the next group.
/// <para>
/// Group commits are numbered before their COMMIT runs (<c>_issued</c>) and counted once it has returned
/// (<c>_committed</c>); <c>_flushed</c> is the highest number known to be on disk. Flushes are serialised: one reads
/// <c>_committed</c>, flushes, and then marks that many flushed, so a later flush covers every earlier commit. No thread is
/// dedicated to it: a caller that needs a commit flushed when no flush is under way runs the flush itself; callers arriving
/// meanwhile wait (the asynchronous calls, <see cref="SettleAsync"/> and <see cref="RecordEarnedAsync"/>, without holding a
/// thread), and the flush's runner then completes those it covered and hands the next flush to the oldest one it did not. Nothing read is
/// acted on before its flush: every call of the ledger (on the writer's connection or the reader's) returns only once the
/// group commits it could have seen — those numbered when its statements had run — are flushed, so an AlreadyRecorded, an
/// owed amount, a reservation or a balance is never answered from a commit a crash could still undo.
/// </para>
/// <para>
/// SQLite keeps its own syncs where they matter: the first group commit after opening commits with <c>synchronous=FULL</c>
/// (SQLite's first sync of a WAL it opened also syncs the directory holding it, so the WAL file itself survives power loss),
/// the rare durable transactions outside the group commit (forfeits, vouches, chain recovery) still commit with FULL, and a
/// checkpoint under NORMAL syncs the WAL before it copies any frame into the database and syncs the database before the
/// WAL is reused, so no checkpoint moves an unflushed frame. A flush that fails fails every caller waiting for it and
/// every later call (<see cref="LedgerException"/>): after a failed fsync the file's state is unknown (the kernel may have
/// dropped the pages it could not write), so the ledger must be reopened, which reads what is on disk. The in-memory
/// stand-in of simulations has nothing to flush.
/// </para>
/// </summary>
public sealed partial class CreditLedger
{
    private readonly Lock _flushGate = new();
    private readonly Lock _flushRun = new();
    private readonly List<FlushWaiter> _flushWaiters = [];
    private bool _flushing;
    private FileStream? _wal;
    private long _issued;
    private long _committed;
    private long _flushed;
    private Exception? _flushFailure;
    private bool _walSynced;
    private bool _inGroupCommit;
    private int _waitingForFlush;

    /// <summary>
    /// Test seam: called (under the flush's own lock, never the writer's) with the flush to run; a test can hold it, count
    /// it, or throw instead of calling it.
    /// </summary>
    internal Action<Action>? FlushHook { get; set; }

    /// <summary>Threads waiting for (or running) a flush of a commit they saw (tests: a reader that saw an unflushed commit waits).</summary>
    internal int WaitingForFlush => Volatile.Read(ref _waitingForFlush);

    /// <summary>Group commits whose COMMIT has run since the ledger was opened.</summary>
    internal long GroupCommits => Volatile.Read(ref _committed);

    /// <summary>Group commits flushed since the ledger was opened.</summary>
    internal long FlushedGroupCommits => Volatile.Read(ref _flushed);

    /// <summary>Opens the ledger's own handle on its WAL file (a file-backed ledger, after SQLite has made the file).</summary>
    private void OpenWal() => _wal = new FileStream(Path + "-wal", new FileStreamOptions
    {
        Mode = FileMode.Open,
        Access = FileAccess.ReadWrite, // .NET flushes a stream to disk only when it can write; nothing is written through it
        Share = FileShare.ReadWrite | FileShare.Delete,
        BufferSize = 0,
    });

    /// <summary>
    /// Under the writer's lock: commits a group commit's transaction, numbered before its COMMIT runs (a reader may see it
    /// from that moment) and counted as committed once the COMMIT has returned, or failed.
    /// </summary>
    private void CommitGroup(LedgerTransaction tx)
    {
        var number = Interlocked.Increment(ref _issued);
        try
        {
            tx.Commit();
            if (_durable)
            {
                _walSynced = true; // SQLite synced the WAL inside this COMMIT, and its directory with it
            }
        }
        finally
        {
            Volatile.Write(ref _committed, number);
        }
    }

    /// <summary>The number of the newest group commit a statement that has run could have seen.</summary>
    private long GroupCommitsSeen => Interlocked.Read(ref _issued);

    /// <summary>Throws once a flush has failed: the ledger must be reopened.</summary>
    private void ThrowIfFlushFailed()
    {
        if (Volatile.Read(ref _flushFailure) is { } failure)
        {
            throw FlushFailed(failure);
        }
    }

    /// <summary>
    /// Returns once group commit <paramref name="number"/> and every earlier one are on disk: at once when a flush has
    /// covered them, else after flushing (or waiting for the flush under way, which may cover them). Never call it holding
    /// the writer's lock or the reader's: a commit seen while its COMMIT was still running is waited for by taking the
    /// writer's lock.
    /// </summary>
    private void AwaitFlushed(long number)
    {
        if (_inMemory || number <= Volatile.Read(ref _flushed))
        {
            return;
        }
        Interlocked.Increment(ref _waitingForFlush);
        try
        {
            var waiter = EnterFlush(number, async: false, out var lead);
            if (waiter is not null)
            {
                lead = waiter.Wait();
            }
            if (lead)
            {
                LeadFlush(inline: false); // a synchronous caller may hold locks of its own: nobody else's continuation runs here
            }
        }
        finally
        {
            Interlocked.Decrement(ref _waitingForFlush);
        }
    }

    /// <summary>
    /// <see cref="AwaitFlushed"/> without holding a thread while another caller's flush runs: a caller that finds a flush
    /// under way awaits its end (the thread goes back to the pool) instead of blocking on it. Whoever flushes still blocks
    /// its own thread in the <c>fsync</c>; one thread per ledger at a time, not one per waiting caller.
    /// </summary>
    private ValueTask AwaitFlushedAsync(long number) =>
        _inMemory || number <= Volatile.Read(ref _flushed) ? ValueTask.CompletedTask : AwaitFlushedSlowAsync(number);

    private async ValueTask AwaitFlushedSlowAsync(long number)
    {
        Interlocked.Increment(ref _waitingForFlush);
        try
        {
            var waiter = EnterFlush(number, async: true, out var lead);
            if (waiter is not null)
            {
                lead = await waiter.Task;
            }
            if (lead)
            {
                LeadFlush(inline: true);
            }
        }
        finally
        {
            Interlocked.Decrement(ref _waitingForFlush);
        }
    }

    /// <summary>
    /// Joins the flushes for commit <paramref name="number"/>: returns null with <paramref name="lead"/> false when a flush
    /// has covered it already, null with <paramref name="lead"/> true when no flush is under way (the caller flushes now),
    /// else a waiter that completes when a flush has covered it (false) or when the caller is to run the next flush (true).
    /// </summary>
    private FlushWaiter? EnterFlush(long number, bool async, out bool lead)
    {
        lead = false;
        if (number > Volatile.Read(ref _committed))
        {
            // Seen while its COMMIT was still running (SQLite publishes a commit to readers inside it): its COMMIT runs
            // under the writer's lock, so once that lock is free the commit is counted.
            lock (_gate)
            {
            }
        }
        lock (_flushGate)
        {
            if (number <= _flushed)
            {
                return null;
            }
            if (_flushFailure is { } failure)
            {
                throw FlushFailed(failure);
            }
            ObjectDisposedException.ThrowIf(_wal is null, this);
            if (!_flushing)
            {
                _flushing = true;
                lead = true;
                return null;
            }
            var waiter = new FlushWaiter(number, async);
            _flushWaiters.Add(waiter);
            return waiter;
        }
    }

    /// <summary>
    /// Runs one flush as its only runner (<c>_flushing</c> set by <see cref="EnterFlush"/>, or handed over): flushes every
    /// COMMIT that has returned, then completes the waiters it covered, and hands the next flush to the oldest waiter it did
    /// not cover, if any (that waiter's commit has returned, so the next flush covers it). A failure fails every waiter.
    /// </summary>
    /// <param name="inline">Whether the asynchronous waiters it covers may continue on this thread (<see cref="FlushRelease"/>).</param>
    private void LeadFlush(bool inline)
    {
        Exception? failure = null;
        FlushRelease release;
        lock (_flushRun)
        {
            var through = Volatile.Read(ref _committed); // every COMMIT that has returned: this flush covers them all
            if (through > Volatile.Read(ref _flushed)) // not when closing the ledger flushed them meanwhile
            {
                try
                {
                    if (_wal is null)
                    {
                        throw new ObjectDisposedException(nameof(CreditLedger));
                    }
                    FlushWal();
                }
                catch (Exception e)
                {
                    failure = e;
                }
            }
            release = ReleaseFlushWaiters(failure is null ? through : null, failure, handOver: true);
        }
        release.Complete(this, inline); // outside the flush's locks: a waiter's continuation may run here, and may flush again
        if (failure is not null)
        {
            throw failure;
        }
    }

    /// <summary>
    /// After a flush through <paramref name="through"/> (null: it failed with <paramref name="failure"/>): completes the
    /// waiters it covered (all of them on a failure) and, when <paramref name="handOver"/>, hands the next flush to the oldest
    /// one left or ends the run of flushes.
    /// </summary>
    private FlushRelease ReleaseFlushWaiters(long? through, Exception? failure, bool handOver)
    {
        List<FlushWaiter> covered = [];
        FlushWaiter? next = null;
        lock (_flushGate)
        {
            if (through is { } flushed && flushed > _flushed)
            {
                Volatile.Write(ref _flushed, flushed);
            }
            for (var i = 0; i < _flushWaiters.Count; i++)
            {
                var waiter = _flushWaiters[i];
                if (failure is not null || waiter.Number <= _flushed)
                {
                    covered.Add(waiter);
                    _flushWaiters.RemoveAt(i--);
                }
            }
            if (handOver)
            {
                if (_flushWaiters.Count > 0)
                {
                    next = _flushWaiters[0];
                    _flushWaiters.RemoveAt(0);
                }
                else
                {
                    _flushing = false;
                }
            }
        }
        return new FlushRelease(covered, next, failure);
    }

    /// <summary>Threads completing flush waiters now (inline continuations run inside; nested completions are queued instead).</summary>
    [ThreadStatic]
    private static int t_completing;

    /// <summary>
    /// What a flush tells its waiters, done once the flush's locks are released. When the flush's runner is itself an
    /// asynchronous caller, an asynchronous waiter it covered continues on its thread (no thread-pool work item per waiter,
    /// and no queue of them for the pool to take for starvation), except inside another such completion on this thread,
    /// where it is queued so stacks do not nest; a synchronous runner (which may hold locks of its own) queues them all. The
    /// next flush's runner is told first, and always queued: its flush must not run inside this caller's call, and a covered
    /// waiter continuing here may itself wait for that flush.
    /// </summary>
    private readonly record struct FlushRelease(List<FlushWaiter> Covered, FlushWaiter? Next, Exception? Failure)
    {
        public void Complete(CreditLedger ledger, bool inlineAllowed)
        {
            // The next runner first: a covered waiter continuing here may wait (synchronously) for the flush it runs.
            Next?.Complete(lead: true, null, inline: false);
            var inline = inlineAllowed && t_completing == 0;
            t_completing++;
            try
            {
                foreach (var waiter in Covered)
                {
                    waiter.Complete(lead: false, Failure is null ? null : Failure is ObjectDisposedException
                        ? new ObjectDisposedException(nameof(CreditLedger))
                        : ledger.FlushFailed(Volatile.Read(ref ledger._flushFailure) ?? Failure), inline);
                }
            }
            finally
            {
                t_completing--;
            }
        }
    }

    /// <summary>
    /// A caller waiting for a flush: told when a flush has covered its commit (false), when it is to run the next flush
    /// itself (true), or that the flush failed. An asynchronous caller awaits a task; a synchronous one blocks on an event,
    /// not on a task, since a thread-pool thread blocked on a task makes the pool add threads to make up for it.
    /// </summary>
    private sealed class FlushWaiter(long number, bool async)
    {
        private readonly TaskCompletionSource<bool>? _task = async ? new() : null; // continuations inline unless queued below
        private readonly ManualResetEventSlim? _event = async ? null : new(false, spinCount: 1);
        private bool _lead;
        private Exception? _error;

        public long Number { get; } = number;

        /// <summary>The asynchronous caller's wait.</summary>
        public Task<bool> Task => _task!.Task;

        public void Complete(bool lead, Exception? error, bool inline)
        {
            if (_task is { } task)
            {
                if (inline)
                {
                    _ = error is null ? task.TrySetResult(lead) : task.TrySetException(error);
                }
                else
                {
                    ThreadPool.UnsafeQueueUserWorkItem(static s =>
                    {
                        var (t, l, e) = s;
                        _ = e is null ? t.TrySetResult(l) : t.TrySetException(e);
                    }, (task, lead, error), preferLocal: false);
                }
                return;
            }
            _lead = lead;
            _error = error;
            _event!.Set();
        }

        /// <summary>The synchronous caller's wait: whether it runs the next flush; throws the flush's failure.</summary>
        public bool Wait()
        {
            _event!.Wait();
            _event.Dispose();
            return _error is { } error ? throw error : _lead;
        }
    }

    /// <summary>Flushes the WAL (through <see cref="FlushHook"/> when set), under the flush's lock; a failure is kept.</summary>
    private void FlushWal()
    {
        try
        {
            if (FlushHook is { } hook)
            {
                hook(FsyncWal);
            }
            else
            {
                FsyncWal();
            }
        }
        catch (Exception e)
        {
            Volatile.Write(ref _flushFailure, e);
            throw FlushFailed(e);
        }
    }

    private void FsyncWal() => (_wal ?? throw new ObjectDisposedException(nameof(CreditLedger))).Flush(flushToDisk: true);

    /// <summary>
    /// From <see cref="Dispose"/> (the writer's lock held, so nothing commits meanwhile): flushes what is committed and not
    /// yet flushed, completes whoever waited for it, then closes the handle.
    /// </summary>
    private void CloseWal()
    {
        FlushRelease release;
        lock (_flushRun)
        {
            if (_wal is null)
            {
                return;
            }
            var through = Volatile.Read(ref _committed);
            Exception? failure = null;
            if (Volatile.Read(ref _flushFailure) is null && through > Volatile.Read(ref _flushed))
            {
                try
                {
                    FlushWal();
                }
                catch (LedgerException e)
                {
                    failure = e; // kept in _flushFailure: whoever still waits for these commits is told
                }
            }
            release = ReleaseFlushWaiters(failure is null ? through : null, failure ?? Volatile.Read(ref _flushFailure), handOver: false);
            _wal.Dispose();
            _wal = null;
        }
        release.Complete(this, inlineAllowed: false); // under the writer's lock (Dispose): nothing runs here
    }

    private LedgerException FlushFailed(Exception e) =>
        new($"ledger {Path}: flushing its WAL failed ({e.Message}); commits since the last flush may be lost: reopen the ledger", e);
}
