using Potluck.Protocol.Identity;

namespace Potluck.Scheduler.Credits;

/// <summary>
/// The in-memory stand-in's ledger before its first write. A new ledger's open writes only what follows from its owner,
/// its options and the time of that open (its <c>meta</c> rows, the initial grant, the core tables); in a simulation most
/// nodes never take part in a lease, and holding a SQLite connection, its parsed schema and its pages for those rows alone
/// is most of such a node's SQLite. So, in the stand-in, opening a ledger whose store holds no connection yet writes
/// nothing: the owner and the time of that first open are kept in the store's managed state (they outlive a crash and
/// restart of the node, as the file would), the reads a node makes answer what the new ledger would hold (its grant, no
/// reservation, no chain block, no fork, nothing owed: <see cref="Fresh{T}"/>), and the first operation that needs the
/// store (any write, and any other read) opens its connection and creates the ledger exactly as the open would have, its
/// grant recorded at the time of that first open (<see cref="Materialise"/>). A file ledger, and a stand-in whose store is
/// open already, is created at open as before.
/// </summary>
public sealed partial class CreditLedger
{
    /// <summary>The managed state's name, in the stand-in's store, of a ledger opened and not written yet.</summary>
    private const string UnwrittenKey = "ledger.db:unwritten";

    /// <summary>A ledger opened in the stand-in's store and not created there yet: whose it is, and when it was first opened.</summary>
    private sealed record UnwrittenLedger(PeerId Owner, long OpenedAt);

    /// <summary>True while the stand-in's ledger has not been created in its store (under the writer's lock).</summary>
    private bool _unwritten;

    /// <summary>When a ledger created now was first opened (its grant's time); null: now.</summary>
    private long? _createdAt;

    /// <summary>
    /// The stand-in's open when its store holds no connection: a ledger that writes nothing until its first operation needs
    /// the store. Null when the store is open (the ledger is then opened there as before).
    /// </summary>
    private static CreditLedger? OpenUnwritten(Storage.SqliteMemory.SharedStore store, string path, PeerId owner, CreditsOptions options, TimeProvider time)
    {
        return store.WithManaged(managed =>
        {
            if (store.IsOpen)
            {
                return null;
            }
            var created = !managed.TryGetValue(UnwrittenKey, out var kept);
            var unwritten = kept as UnwrittenLedger ?? new UnwrittenLedger(owner, time.GetUtcNow().ToUnixTimeMilliseconds());
            if (unwritten.Owner != owner)
            {
                throw new LedgerException($"ledger {path} belongs to {unwritten.Owner}, not {owner}");
            }
            managed[UnwrittenKey] = unwritten;
            return new CreditLedger(null!, path, owner, options, time, store)
            {
                _inMemory = true,
                _unwritten = true,
                _durable = true, // as the open leaves it (synchronous=FULL noted)
                Created = created,
            };
        });
    }

    /// <summary>
    /// The stand-in's open on its store's connection (under the store's lock): a ledger opened before and never written
    /// is created now with the time of that first open and its owner checked, and is no new ledger.
    /// </summary>
    private void InitialiseStandIn()
    {
        var store = _store!;
        var kept = store.Managed.TryGetValue(UnwrittenKey, out var k) ? (UnwrittenLedger)k : null;
        if (kept is not null && kept.Owner != Owner)
        {
            throw new LedgerException($"ledger {Path} belongs to {kept.Owner}, not {Owner}");
        }
        _createdAt = kept?.OpenedAt;
        try
        {
            Initialise();
        }
        finally
        {
            _createdAt = null;
        }
        if (kept is not null)
        {
            Created = false;
            store.Managed.Remove(UnwrittenKey);
        }
    }

    /// <summary>
    /// The stand-in's first operation that needs the store (under the writer's lock): opens the store's connection and
    /// creates the ledger there as its open would have (<see cref="InitialiseStandIn"/>).
    /// </summary>
    private void Materialise()
    {
        var created = Created;
        _unwritten = false;
        try
        {
            _connection = _store!.Connection;
            InitialiseStandIn();
        }
        catch
        {
            _unwritten = true;
            throw;
        }
        Created = created; // what the open answered stays
    }

    /// <summary>
    /// A read: <paramref name="fresh"/>, what a new ledger holds, while the stand-in's ledger is not written (opening
    /// nothing); otherwise <paramref name="read"/>.
    /// </summary>
    private T Fresh<T>(T fresh, Func<T> read)
    {
        if (_inMemory)
        {
            lock (_gate)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                if (_unwritten)
                {
                    return fresh;
                }
            }
        }
        return read();
    }

    /// <summary>A new ledger's balance: its grant.</summary>
    private long FreshBalance => _options.InitialGrant > 0 ? _options.InitialGrant : 0;

    /// <summary>Whether the stand-in's ledger is still unwritten: its store holds nothing of it (tests).</summary>
    internal bool Unwritten
    {
        get
        {
            lock (_gate)
            {
                return _unwritten;
            }
        }
    }
}
