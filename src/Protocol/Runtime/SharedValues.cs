using System.Runtime.InteropServices;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;

namespace Potluck.Protocol.Runtime;

/// <summary>
/// Immutable decoded values that the nodes of one process share (issue 11: a simulated mesh of thousands of nodes, each of
/// which decodes the same providers' signed advertisements, the same peers' ids and addresses): a node that stores a
/// value equal to one another node of the process holds keeps that instance instead of its own copy. Equality is by
/// content (bytes), never by reference or a hash alone. Every node still decodes and checks (signatures included) all it
/// did before; only what it keeps afterwards is the shared instance, so nothing a node decides changes.
/// <para>Injected, never static: a <see cref="NodeRuntime"/> carries one (<see cref="NodeRuntime.WithSharedValues"/>);
/// a simulated mesh gives all its nodes the same instance; a daemon's node gets <see cref="None"/>, which shares nothing
/// and returns every value as it is.</para>
/// <para>Bounded: a table holds its values by weak GC handles, so it never keeps a value alive that no node holds any
/// more; the handles of collected values are swept whenever the table has doubled since its last sweep (amortised O(1)),
/// so it holds at most about twice the values nodes hold (what their own caps bound), whatever a remote sends.
/// Thread-safe (one lock per table: a mesh's nodes run on one event loop, but sandbox runs and escapes use other threads).</para>
/// <para>Only truly immutable values may be shared: <see cref="Multiaddr"/> (its lazy caches are idempotent), the
/// bytes of a <see cref="PeerId"/> (never handed out: <see cref="PeerId.ToBytes"/> copies), a <see cref="PublicKey"/>
/// (<see cref="PublicKey.Data"/> copies; its verifier is made once, thread-safe), and values of the callers' own types
/// that they declare immutable.</para>
/// </summary>
public sealed class SharedValues : IDisposable
{
    private readonly Dictionary<Type, object> _tables = [];
    private readonly Lock _gate = new();
    private readonly WeakShareTable<Multiaddr>? _addresses;
    private readonly WeakShareTable<byte[]>? _peerIds;
    private readonly WeakShareTable<byte[]>? _addressBytes;
    private readonly WeakShareTable<PublicKey>? _keys;
    private readonly WeakShareTable<byte[]>? _messageIds;

    private SharedValues(bool enabled)
    {
        Enabled = enabled;
        if (enabled)
        {
            _addresses = new WeakShareTable<Multiaddr>(EqualityComparer<Multiaddr>.Default);
            _peerIds = new WeakShareTable<byte[]>(ByteContent.Instance);
            _addressBytes = new WeakShareTable<byte[]>(ByteContent.Instance);
            _keys = new WeakShareTable<PublicKey>(EqualityComparer<PublicKey>.Default);
            _messageIds = new WeakShareTable<byte[]>(ByteContent.Instance);
        }
    }

    /// <summary>A new table for the nodes given it (a simulated mesh's).</summary>
    public static SharedValues Create() => new(enabled: true);

    /// <summary>Shares nothing: every value is returned as it is (a real node's).</summary>
    public static SharedValues None { get; } = new(enabled: false);

    /// <summary>Whether values are shared (false for <see cref="None"/>).</summary>
    public bool Enabled { get; }

    /// <summary>What a report calls it when it is on.</summary>
    public const string ReportName =
        "shared immutable values (nodes keep one instance of equal decoded advertisements, gossip messages (by every field's bytes, never by id) and their ids, peer ids, public keys and addresses; every node still decodes and checks all it did)";

    /// <summary>The instance equal to <paramref name="address"/> that a node of this process holds, else <paramref name="address"/> (kept from now on).</summary>
    public Multiaddr Share(Multiaddr address) => _addresses is null ? address : _addresses.Share(address);

    /// <summary>A peer id equal to <paramref name="peer"/> whose bytes are the ones a node of this process holds, else <paramref name="peer"/>.</summary>
    public PeerId Share(PeerId peer)
    {
        if (_peerIds is null || peer.SharedArray is not { } bytes)
        {
            return peer;
        }
        var shared = _peerIds.Share(bytes);
        return ReferenceEquals(shared, bytes) ? peer : PeerId.FromSharedArray(shared);
    }

    /// <summary>
    /// The key equal to <paramref name="key"/> (type and bytes) that a node of this process holds, else <paramref name="key"/>.
    /// A key is immutable (its bytes are never handed out; its verifier is made once, thread-safe).
    /// </summary>
    public PublicKey Share(PublicKey key) => _keys is null ? key : _keys.Share(key);

    /// <summary>
    /// The array equal to <paramref name="bytes"/> (a binary multiaddr a peer store keeps) that a node of this process holds,
    /// else <paramref name="bytes"/> (kept from now on). The caller never writes into either.
    /// </summary>
    public byte[] ShareAddressBytes(byte[] bytes) => _addressBytes is null ? bytes : _addressBytes.Share(bytes);

    /// <summary>
    /// The array equal to <paramref name="id"/> (a gossip message's id, which every router of a simulated mesh keeps for
    /// each message it caches and delivers) that a node of this process holds, else <paramref name="id"/> (kept from now
    /// on). The caller never writes into either (a message id is read only: <c>MessageId.Span</c>; its copies are copies).
    /// </summary>
    public byte[] ShareMessageId(byte[] id) => _messageIds is null ? id : _messageIds.Share(id);

    /// <summary>
    /// The table for values of type <typeparamref name="T"/>, equal by <paramref name="comparer"/> (by content; the first
    /// caller's comparer is the table's); null for <see cref="None"/>. The caller promises the values are immutable.
    /// </summary>
    public WeakShareTable<T>? Table<T>(IEqualityComparer<T> comparer) where T : class
    {
        if (!Enabled)
        {
            return null;
        }
        lock (_gate)
        {
            if (!_tables.TryGetValue(typeof(T), out var table))
            {
                _tables[typeof(T)] = table = new WeakShareTable<T>(comparer);
            }
            return (WeakShareTable<T>)table;
        }
    }

    /// <summary>Distinct addresses tracked now (live or not yet swept; tests and reports).</summary>
    public int AddressCount => _addresses?.Count ?? 0;

    /// <summary>Distinct peer ids tracked now (live or not yet swept).</summary>
    public int PeerIdCount => _peerIds?.Count ?? 0;

    /// <summary>Distinct public keys tracked now (live or not yet swept).</summary>
    public int KeyCount => _keys?.Count ?? 0;

    /// <summary>Distinct binary addresses of peer stores tracked now (live or not yet swept).</summary>
    public int AddressBytesCount => _addressBytes?.Count ?? 0;

    /// <summary>Distinct gossip message ids tracked now (live or not yet swept).</summary>
    public int MessageIdCount => _messageIds?.Count ?? 0;

    /// <summary>
    /// Frees every table's GC handles (the mesh that owns this one is done with it); from then on every value is returned
    /// as it is. <see cref="None"/>: nothing to free.
    /// </summary>
    public void Dispose()
    {
        _addresses?.Clear();
        _peerIds?.Clear();
        _addressBytes?.Clear();
        _keys?.Clear();
        _messageIds?.Clear();
        lock (_gate)
        {
            foreach (var table in _tables.Values)
            {
                ((ISweepable)table).Clear();
            }
        }
    }

    /// <summary>Sweeps every table now (tests).</summary>
    public void Sweep()
    {
        _addresses?.Sweep();
        _peerIds?.Sweep();
        _addressBytes?.Sweep();
        _keys?.Sweep();
        _messageIds?.Sweep();
        lock (_gate)
        {
            foreach (var table in _tables.Values)
            {
                ((ISweepable)table).Sweep();
            }
        }
    }

    internal interface ISweepable
    {
        void Sweep();

        void Clear();
    }
}

/// <summary>
/// A table of values held by weak GC handles and found by content (<see cref="IEqualityComparer{T}"/>), for
/// <see cref="SharedValues"/>: <see cref="Share"/> returns the held instance equal to a value, or keeps the value and
/// returns it. Holds no value alive; entries whose value was collected are dropped by <see cref="Sweep"/>, which
/// <see cref="Share"/> runs whenever the table has doubled since the last one (and at <see cref="MinSweepAt"/> at first).
/// Thread-safe.
/// </summary>
public sealed class WeakShareTable<T> : SharedValues.ISweepable where T : class
{
    /// <summary>The size below which the table is never swept (a sweep costs a pass over every entry).</summary>
    public const int MinSweepAt = 1024;

    private readonly IEqualityComparer<T> _comparer;
    private readonly Dictionary<int, Slot> _slots = [];
    private readonly Lock _gate = new();
    private int _count;
    private int _sweepAt = MinSweepAt;
    private bool _cleared;

    internal WeakShareTable(IEqualityComparer<T> comparer) => _comparer = comparer;

    /// <summary>Entries now: values held (by someone) plus those collected and not yet swept.</summary>
    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _count;
            }
        }
    }

    /// <summary>Sweeps done so far.</summary>
    public int Sweeps { get; private set; }

    /// <summary>The held instance equal to <paramref name="value"/>, else <paramref name="value"/>, kept from now on.</summary>
    public T Share(T value)
    {
        var hash = _comparer.GetHashCode(value);
        lock (_gate)
        {
            if (_cleared)
            {
                return value;
            }
            ref var slot = ref CollectionsMarshal.GetValueRefOrAddDefault(_slots, hash, out var exists);
            if (exists)
            {
                if (Find(slot.First, value) is { } found)
                {
                    return found;
                }
                if (slot.More is { } more)
                {
                    foreach (var handle in more)
                    {
                        if (Find(handle, value) is { } other)
                        {
                            return other;
                        }
                    }
                }
                (slot.More ??= []).Add(new WeakGCHandle<T>(value));
            }
            else
            {
                slot.First = new WeakGCHandle<T>(value);
            }
            if (++_count >= _sweepAt)
            {
                SweepLocked();
            }
            return value;
        }
    }

    /// <summary>Frees every handle and keeps nothing from now on (<see cref="SharedValues.Dispose"/>).</summary>
    public void Clear()
    {
        lock (_gate)
        {
            foreach (var slot in _slots.Values)
            {
                slot.First.Dispose();
                foreach (var handle in slot.More ?? [])
                {
                    handle.Dispose();
                }
            }
            _slots.Clear();
            _count = 0;
            _cleared = true;
        }
    }

    /// <summary>Drops the entries of values that were collected, and frees their handles.</summary>
    public void Sweep()
    {
        lock (_gate)
        {
            SweepLocked();
        }
    }

    private void SweepLocked()
    {
        List<int>? empty = null;
        var live = 0;
        foreach (var hash in _slots.Keys)
        {
            ref var slot = ref CollectionsMarshal.GetValueRefOrNullRef(_slots, hash);
            if (slot.More is { } more)
            {
                for (var i = more.Count - 1; i >= 0; i--)
                {
                    if (!IsAlive(more[i]))
                    {
                        more[i].Dispose();
                        more.RemoveAt(i);
                    }
                }
            }
            if (slot.First.IsAllocated && !IsAlive(slot.First))
            {
                slot.First.Dispose();
                slot.First = default;
            }
            if (!slot.First.IsAllocated && slot.More is { Count: > 0 } rest)
            {
                slot.First = rest[^1];
                rest.RemoveAt(rest.Count - 1);
            }
            if (slot.More is { Count: 0 })
            {
                slot.More = null;
            }
            if (!slot.First.IsAllocated)
            {
                (empty ??= []).Add(hash);
                continue;
            }
            live += 1 + (slot.More?.Count ?? 0);
        }
        if (empty is not null)
        {
            foreach (var hash in empty)
            {
                _slots.Remove(hash);
            }
        }
        _count = live;
        _sweepAt = Math.Max(MinSweepAt, 2 * live);
        Sweeps++;
        if (_slots.Count < _slots.EnsureCapacity(0) / 4)
        {
            _slots.TrimExcess();
        }
    }

    private static bool IsAlive(WeakGCHandle<T> handle) => handle.IsAllocated && handle.TryGetTarget(out _);

    private T? Find(WeakGCHandle<T> handle, T value) =>
        handle.IsAllocated && handle.TryGetTarget(out var held) && _comparer.Equals(held, value) ? held : null;

    private struct Slot
    {
        public WeakGCHandle<T> First;
        public List<WeakGCHandle<T>>? More;
    }
}

/// <summary>Byte arrays equal by content (a randomised hash of the bytes: a remote cannot aim at one slot).</summary>
internal sealed class ByteContent : IEqualityComparer<byte[]>
{
    public static readonly ByteContent Instance = new();

    public bool Equals(byte[]? x, byte[]? y) => ReferenceEquals(x, y) || (x is not null && y is not null && x.AsSpan().SequenceEqual(y));

    public int GetHashCode(byte[] bytes)
    {
        var h = new HashCode();
        h.AddBytes(bytes);
        return h.ToHashCode();
    }
}
