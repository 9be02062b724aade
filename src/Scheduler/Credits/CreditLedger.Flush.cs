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
/// <c>_committed</c>, flushes, and then marks that many flushed, so a later flush covers every earlier commit; any thread
/// that needs a commit flushed does the flush itself when nobody has yet (no thread is dedicated to it). Nothing read is
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
            if (number > Volatile.Read(ref _committed))
            {
                // Seen while its COMMIT was still running (SQLite publishes a commit to readers inside it): its COMMIT
                // runs under the writer's lock, so once that lock is free the commit is counted.
                lock (_gate)
                {
                }
            }
            lock (_flushGate)
            {
                if (number <= _flushed)
                {
                    return;
                }
                if (_flushFailure is { } failure)
                {
                    throw FlushFailed(failure);
                }
                ObjectDisposedException.ThrowIf(_wal is null, this);
                var through = Volatile.Read(ref _committed); // every COMMIT that has returned: this flush covers them all
                FlushWal();
                Volatile.Write(ref _flushed, through);
            }
        }
        finally
        {
            Interlocked.Decrement(ref _waitingForFlush);
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

    /// <summary>From <see cref="Dispose"/> (the writer's lock held): flushes what is committed and not yet flushed, then closes the handle.</summary>
    private void CloseWal()
    {
        lock (_flushGate)
        {
            if (_wal is null)
            {
                return;
            }
            var through = Volatile.Read(ref _committed);
            if (_flushFailure is null && through > _flushed)
            {
                try
                {
                    FlushWal();
                    Volatile.Write(ref _flushed, through);
                }
                catch (LedgerException)
                {
                    // kept in _flushFailure: whoever still waits for these commits is told
                }
            }
            _wal.Dispose();
            _wal = null;
        }
    }

    private LedgerException FlushFailed(Exception e) =>
        new($"ledger {Path}: flushing its WAL failed ({e.Message}); commits since the last flush may be lost: reopen the ledger", e);
}
