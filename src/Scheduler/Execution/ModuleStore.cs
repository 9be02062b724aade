using System.Security.Cryptography;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Storage;

namespace Potluck.Scheduler.Execution;

/// <summary>
/// WASM modules by SHA-256: the provider's answer to "do you hold this module?" (<see cref="IModuleCache"/>), so a
/// requester sends a module only once. Kept in memory (least recently used evicted beyond
/// <see cref="MaxMemoryBytes"/>, never a module a lease holds) and, with a folder, on disk as <c>{sha256}.wasm</c>
/// (written to a temporary name and renamed; checked against its name whenever read, and deleted when it does not
/// match). On disk the store keeps within a <see cref="DiskQuota"/> (the node's <c>compute:provider:diskBytes</c>, shared
/// with the compiled cache): a module is written only when the quota makes room for it, deleting the least recently used
/// files of modules no lease holds (<see cref="Pin"/>, <see cref="TryHold"/>); otherwise it is kept in memory only.
/// Callers store a module only once it has been checked (its hash is the one agreed and it ran): junk a stranger sends
/// is never kept. Thread-safe.
/// </summary>
public sealed class ModuleStore : IModuleCache
{
    private readonly string? _directory;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, LinkedListNode<(string Hex, byte[] Bytes)>> _map = new(StringComparer.Ordinal);
    private readonly LinkedList<(string Hex, byte[] Bytes)> _lru = new();
    private readonly DiskQuota _quota;
    private long _bytes;

    /// <param name="directory">Where modules persist; null keeps them in memory only.</param>
    /// <param name="maxMemoryBytes">Most module bytes kept in memory. Default 256 MiB.</param>
    /// <param name="maxDiskBytes">Most module bytes kept on disk (a quota of this store's own). Default 512 MiB.</param>
    public ModuleStore(string? directory, long maxMemoryBytes = 256L << 20, long maxDiskBytes = 512L << 20)
        : this(directory, new DiskQuota(maxDiskBytes), maxMemoryBytes)
    {
        _quota.EvictToLimit();
    }

    /// <param name="directory">Where modules persist; null keeps them in memory only.</param>
    /// <param name="quota">
    /// The disk limit, shared with the compiled cache. What an earlier run left in <paramref name="directory"/> is counted
    /// against it here; the caller calls <see cref="DiskQuota.EvictToLimit"/> once every store sharing it is built.
    /// </param>
    /// <param name="maxMemoryBytes">Most module bytes kept in memory. Default 256 MiB.</param>
    public ModuleStore(string? directory, DiskQuota quota, long maxMemoryBytes = 256L << 20)
    {
        ArgumentNullException.ThrowIfNull(quota);
        _directory = directory is null ? null : Path.GetFullPath(directory);
        _quota = quota;
        MaxMemoryBytes = maxMemoryBytes;
        if (_directory is not null)
        {
            Protocol.Runtime.OwnerOnly.CreateDirectory(_directory);
            // What an earlier run kept counts against the quota, oldest first; a crash's leftover temporary files go.
            foreach (var file in new DirectoryInfo(_directory).GetFiles())
            {
                if (file.Name.EndsWith(".tmp", StringComparison.Ordinal))
                {
                    TryDelete(file.FullName);
                }
                else if (file.Name.EndsWith(".wasm", StringComparison.Ordinal))
                {
                    _quota.Adopt(file.FullName, file.Name[..^5], file.Length, file.LastWriteTimeUtc);
                }
            }
        }
    }

    public long MaxMemoryBytes { get; }

    /// <summary>The disk limit now (shared with the compiled cache when the node built this store).</summary>
    public long MaxDiskBytes => _quota.LimitBytes;

    /// <summary>The quota this store keeps within.</summary>
    public DiskQuota Quota => _quota;

    /// <summary>Bytes on disk counted against the quota now (the compiled cache's too, when it shares the quota).</summary>
    public long DiskBytes => _quota.UsedBytes;

    /// <summary>Keeps the module with this SHA-256 (on disk and in memory) until the returned handle is disposed (a lease in progress).</summary>
    public IDisposable Pin(ReadOnlySpan<byte> sha256) => _quota.Pin(Convert.ToHexStringLower(sha256));

    /// <summary>
    /// Holds what a lease of this module needs, from its offer to its end: the module pinned when held here, else room on
    /// disk reserved for its <paramref name="moduleSize"/> bytes (made by deleting the least recently used files of modules
    /// no lease holds). Null when the files leases hold and the bytes they reserved leave no room.
    /// </summary>
    public ModuleHold? TryHold(ReadOnlySpan<byte> sha256, long moduleSize)
    {
        var hex = Convert.ToHexStringLower(sha256);
        // Pinned before looking, so nothing deletes it between the look and the lease.
        using var look = _quota.Pin(hex);
        var held = Contains(sha256);
        var hold = _quota.TryHold(hex, held || _directory is null ? 0 : moduleSize);
        return hold is null ? null : new ModuleHold(held, hold);
    }

    /// <summary>The most bytes one module may need on disk here: the limit (no module larger can ever be stored).</summary>
    public long DiskLimitBytes => _directory is null ? long.MaxValue : _quota.LimitBytes;

    public bool Contains(ReadOnlySpan<byte> sha256)
    {
        if (sha256.Length != LeaseProtocol.HashLength)
        {
            return false;
        }
        var hex = Convert.ToHexStringLower(sha256);
        lock (_gate)
        {
            if (_map.ContainsKey(hex))
            {
                return true;
            }
        }
        return PathFor(hex) is { } path && File.Exists(path);
    }

    /// <summary>The module with this SHA-256, or null.</summary>
    public byte[]? TryGet(ReadOnlySpan<byte> sha256)
    {
        if (sha256.Length != LeaseProtocol.HashLength)
        {
            return null;
        }
        var hex = Convert.ToHexStringLower(sha256);
        var path = PathFor(hex);
        if (path is not null)
        {
            _quota.Touch(path);
        }
        lock (_gate)
        {
            if (_map.TryGetValue(hex, out var node))
            {
                _lru.Remove(node);
                _lru.AddFirst(node);
                return node.Value.Bytes;
            }
        }
        if (path is null)
        {
            return null;
        }
        try
        {
            var bytes = File.ReadAllBytes(path);
            if (!SHA256.HashData(bytes).AsSpan().SequenceEqual(sha256))
            {
                File.Delete(path);
                _quota.Forget(path);
                return null;
            }
            TryTouchFile(path); // recently used, also for the order a restart finds
            Remember(hex, bytes);
            return bytes;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>
    /// Stores a module (its hash is computed here, never trusted); false, and nothing kept, when
    /// <paramref name="expectedSha256"/> is given and differs. Keep only modules that have been checked. On disk only when
    /// the quota makes room for it (otherwise in memory only).
    /// </summary>
    public bool Put(ReadOnlyMemory<byte> module, ReadOnlySpan<byte> expectedSha256 = default)
    {
        var bytes = module.ToArray();
        var hash = SHA256.HashData(bytes);
        if (!expectedSha256.IsEmpty && !expectedSha256.SequenceEqual(hash))
        {
            return false;
        }
        var hex = Convert.ToHexStringLower(hash);
        Remember(hex, bytes);
        if (PathFor(hex) is not { } path || File.Exists(path))
        {
            return true;
        }
        using var writing = _quota.Pin(hex); // not deleted by another store's eviction while it is written
        if (!_quota.TryAdd(path, hex, bytes.Length, takeReservation: true))
        {
            return true; // kept in memory only: no room on disk, or another Put is writing it
        }
        var temp = $"{path}.{Guid.NewGuid():N}.tmp";
        try
        {
            Protocol.Runtime.OwnerOnly.WriteNewFile(temp, bytes);
            File.Move(temp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _quota.Forget(path);
            TryDelete(temp);
        }
        return true;
    }

    private static void TryTouchFile(string path)
    {
        try
        {
            File.SetLastWriteTimeUtc(path, DateTime.UtcNow);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    private void Remember(string hex, byte[] bytes)
    {
        if (bytes.Length > MaxMemoryBytes)
        {
            return;
        }
        lock (_gate)
        {
            if (_map.ContainsKey(hex))
            {
                return;
            }
            _map[hex] = _lru.AddFirst((hex, bytes));
            _bytes += bytes.Length;
            // Least recently used first, never a module a lease holds (it may be held in memory only).
            for (var node = _lru.Last; _bytes > MaxMemoryBytes && node is not null;)
            {
                var previous = node.Previous;
                if (!_quota.IsPinned(node.Value.Hex))
                {
                    _lru.Remove(node);
                    _map.Remove(node.Value.Hex);
                    _bytes -= node.Value.Bytes.Length;
                }
                node = previous;
            }
        }
    }

    private string? PathFor(string hex) => _directory is null ? null : Path.Combine(_directory, hex + ".wasm");
}
