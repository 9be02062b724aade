using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Wasmtime;

namespace Potluck.Scheduler.Sandbox;

/// <summary>
/// Compiled modules by SHA-256: an in-memory LRU in front of an optional on-disk cache.
/// A disk entry is <c>{hash}.{fingerprint}.cwasm</c> = magic ‖ HMAC-SHA256(node key, fingerprint ‖ hash ‖ payload) ‖ payload,
/// where payload is <see cref="Module.Serialize"/>'s output and the node key is a random 32-byte
/// secret this node keeps in the cache folder. Only entries whose HMAC verifies are ever handed to
/// <see cref="Module.Deserialize"/> (deserializing is only safe on bytes this node wrote); any other
/// file is deleted and the module recompiled. Files are written to a temporary name and renamed.
/// <para>
/// Each in-memory entry also keeps a copy of the module's bytes (modules up to
/// <see cref="MaxRememberedBytes"/>), so a run of a cached module can be matched by comparing bytes,
/// which is several times cheaper than hashing them again (<see cref="TryGetByBytes"/>). Byte equality
/// with bytes whose SHA-256 was computed here gives the same SHA-256, so nothing is trusted that was
/// not hashed.
/// </para>
/// </summary>
internal sealed class ModuleCache
{
    private static readonly byte[] Magic = "PLKCWSM1"u8.ToArray();
    private const int MacSize = 32;
    private const string KeyFileName = "node-cache.key";

    private readonly Engine _engine;
    private readonly string _fingerprint;
    private readonly string? _directory;
    private readonly int _capacity;
    private readonly ILogger _logger;
    private readonly object _gate = new();
    private readonly Dictionary<string, LinkedListNode<CachedModule>> _map = new(StringComparer.Ordinal);
    private readonly LinkedList<CachedModule> _lru = new();
    private byte[]? _key;

    /// <summary>Largest module whose bytes an entry keeps for <see cref="TryGetByBytes"/>: 4 MiB.</summary>
    public const int MaxRememberedBytes = 4 * 1024 * 1024;

    private readonly Storage.DiskQuota _quota;

    /// <param name="quota">
    /// What entries in <paramref name="directory"/> may take on disk (the node's, shared with its module store): an entry is
    /// written only when the quota makes room, deleting the least recently used files of modules no lease holds. Entries an
    /// earlier run left are counted here (a crash's temporary files deleted); the caller then calls
    /// <see cref="Storage.DiskQuota.EvictToLimit"/>. Null: a quota of its own of 1 GiB.
    /// </param>
    public ModuleCache(Engine engine, string fingerprint, string? directory, int capacity, ILogger logger, Storage.DiskQuota? quota = null)
    {
        _quota = quota ?? new Storage.DiskQuota(1L << 30);
        _engine = engine;
        _fingerprint = fingerprint;
        _directory = directory is null ? null : Path.GetFullPath(directory);
        _capacity = capacity;
        _logger = logger;
        if (_directory is null) return;
        Protocol.Runtime.OwnerOnly.CreateDirectory(_directory);
        foreach (var file in new DirectoryInfo(_directory).GetFiles())
        {
            if (file.Name.EndsWith(".tmp", StringComparison.Ordinal))
            {
                TryDelete(file.FullName);
            }
            else if (file.Name.EndsWith(".cwasm", StringComparison.Ordinal))
            {
                // Entries of another fingerprint (an older runtime) count too, and go first as the oldest.
                _quota.Adopt(file.FullName, file.Name[..file.Name.IndexOf('.', StringComparison.Ordinal)], file.Length, file.LastWriteTimeUtc);
            }
        }
    }

    /// <summary>Disk path of a module's entry (for tests and diagnostics).</summary>
    public string? PathFor(string sha256Hex)
        => _directory is null ? null : Path.Combine(_directory, $"{sha256Hex}.{_fingerprint}.cwasm");

    /// <summary>
    /// The entry whose module bytes equal <paramref name="wasm"/>, without hashing them (marked most
    /// recently used); null when no entry kept bytes equal to these.
    /// </summary>
    public CachedModule? TryGetByBytes(ReadOnlySpan<byte> wasm)
    {
        if (wasm.Length > MaxRememberedBytes) return null;
        lock (_gate)
        {
            for (var node = _lru.First; node is not null; node = node.Next)
            {
                var wasmCopy = node.Value.Wasm;
                if (wasmCopy is not null && wasmCopy.Length == wasm.Length && wasm.SequenceEqual(wasmCopy))
                {
                    _lru.Remove(node);
                    _lru.AddFirst(node);
                    Touch(node.Value.Sha256Hex);
                    return node.Value;
                }
            }
        }
        return null;
    }

    /// <summary>Returns the compiled module; throws <see cref="WasmtimeException"/> when the bytes do not compile.</summary>
    /// <param name="sha256Hex">SHA-256 of <paramref name="wasm"/>, computed by the caller from these bytes.</param>
    public CachedModule GetOrCompile(string sha256Hex, ReadOnlySpan<byte> wasm, out ModuleSource source)
    {
        lock (_gate)
        {
            if (_map.TryGetValue(sha256Hex, out var node))
            {
                _lru.Remove(node);
                _lru.AddFirst(node);
                Touch(sha256Hex);
                source = ModuleSource.MemoryCache;
                return node.Value;
            }
        }

        var module = TryLoadFromDisk(sha256Hex);
        source = ModuleSource.DiskCache;
        if (module is null)
        {
            module = Module.FromBytes(_engine, sha256Hex, wasm);
            source = ModuleSource.Compiled;
            TryStoreOnDisk(sha256Hex, module);
        }
        var entry = new CachedModule(sha256Hex, module, ModuleShape.Of(module),
            wasm.Length <= MaxRememberedBytes ? wasm.ToArray() : null);

        lock (_gate)
        {
            if (_map.TryGetValue(sha256Hex, out var raced))
            {
                return raced.Value;
            }
            _map[sha256Hex] = _lru.AddFirst(entry);
            while (_map.Count > _capacity)
            {
                // Not disposed: a concurrent run may still hold it; its safe handle frees it when unreachable.
                var last = _lru.Last!;
                _lru.RemoveLast();
                _map.Remove(last.Value.Sha256Hex);
            }
        }
        return entry;
    }

    private Module? TryLoadFromDisk(string sha256Hex)
    {
        var path = PathFor(sha256Hex);
        if (path is null || !File.Exists(path)) return null;
        try
        {
            var bytes = File.ReadAllBytes(path);
            if (bytes.Length < Magic.Length + MacSize || !bytes.AsSpan(0, Magic.Length).SequenceEqual(Magic))
            {
                Reject(path, sha256Hex, "bad header");
                return null;
            }
            var payload = bytes.AsSpan(Magic.Length + MacSize);
            var expected = ComputeMac(sha256Hex, payload);
            if (!CryptographicOperations.FixedTimeEquals(expected, bytes.AsSpan(Magic.Length, MacSize)))
            {
                Reject(path, sha256Hex, "MAC mismatch");
                return null;
            }
            var module = Module.Deserialize(_engine, sha256Hex, payload);
            TryTouch(path); // recently used: the last to be evicted, also after a restart
            _quota.Touch(path);
            return module;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or WasmtimeException)
        {
            // A signed entry Wasmtime still refuses (e.g. another CPU): deleted, then recompiled and stored again.
            SandboxLog.CacheEntryUnreadable(_logger, sha256Hex, e.GetType().Name);
            if (e is WasmtimeException)
            {
                TryDelete(path);
                _quota.Forget(path);
            }
            return null;
        }
    }

    /// <summary>Marks the entry of <paramref name="sha256Hex"/> on disk as just used.</summary>
    private void Touch(string sha256Hex)
    {
        if (PathFor(sha256Hex) is { } path)
        {
            _quota.Touch(path);
        }
    }

    private static void TryTouch(string path)
    {
        try
        {
            File.SetLastWriteTimeUtc(path, DateTime.UtcNow);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    private void Reject(string path, string sha256Hex, string why)
    {
        SandboxLog.CacheEntryRejected(_logger, sha256Hex, why);
        TryDelete(path);
        _quota.Forget(path);
    }

    private void TryStoreOnDisk(string sha256Hex, Module module)
    {
        var path = PathFor(sha256Hex);
        if (path is null) return;
        var temp = $"{path}.{Guid.NewGuid():N}.tmp";
        // Not deleted by another store's eviction while it is written.
        using var writing = _quota.Pin(sha256Hex);
        var counted = false;
        try
        {
            var payload = module.Serialize();
            // Counted before it is written, and written only when the disk limit makes room for it (it is a cache); not
            // when it is counted already (another run is writing it, or an unreadable entry is still there).
            if (!_quota.TryAdd(path, sha256Hex, Magic.Length + MacSize + payload.Length))
            {
                return;
            }
            counted = true;
            using (var f = new FileStream(temp, Protocol.Runtime.OwnerOnly.NewFile()))
            {
                f.Write(Magic);
                f.Write(ComputeMac(sha256Hex, payload));
                f.Write(payload);
                f.Flush(flushToDisk: true);
            }
            File.Move(temp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or WasmtimeException)
        {
            SandboxLog.CacheWriteFailed(_logger, sha256Hex, e.GetType().Name);
            TryDelete(temp);
            if (counted)
            {
                _quota.Forget(path);
            }
        }
    }

    private byte[] ComputeMac(string sha256Hex, ReadOnlySpan<byte> payload)
    {
        using var mac = IncrementalHash.CreateHMAC(HashAlgorithmName.SHA256, NodeKey());
        mac.AppendData(System.Text.Encoding.ASCII.GetBytes($"{_fingerprint}\n{sha256Hex}\n"));
        mac.AppendData(payload);
        return mac.GetHashAndReset();
    }

    /// <summary>The node-local secret: created once (owner-only permissions), then reused.</summary>
    private byte[] NodeKey()
    {
        if (_key is not null) return _key;
        var path = Path.Combine(_directory!, KeyFileName);
        for (var attempt = 0; ; attempt++)
        {
            if (File.Exists(path))
            {
                var existing = File.ReadAllBytes(path);
                if (existing.Length == 32) return _key = existing;
                if (attempt > 0) throw new IOException($"cache key {path} is not 32 bytes");
                File.Delete(path);
            }
            var temp = $"{path}.{Guid.NewGuid():N}.tmp";
            var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
            if (!OperatingSystem.IsWindows()) options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            using (var f = new FileStream(temp, options))
            {
                f.Write(RandomNumberGenerator.GetBytes(32));
            }
            try
            {
                File.Move(temp, path, overwrite: false);
            }
            catch (IOException)
            {
                TryDelete(temp); // another sandbox won the race: use its key
            }
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
}

/// <summary>A compiled module with what a run needs to know about it, computed once.</summary>
/// <param name="Sha256Hex">SHA-256 of the module's bytes, 64 lowercase hex digits.</param>
/// <param name="Module">The compiled module.</param>
/// <param name="Shape">Its imports and exports as the sandbox checks them.</param>
/// <param name="Wasm">A private copy of the module's bytes (null for modules over <see cref="ModuleCache.MaxRememberedBytes"/>).</param>
internal sealed record CachedModule(string Sha256Hex, Module Module, ModuleShape Shape, byte[]? Wasm)
{
    /// <summary>The SHA-256 as bytes.</summary>
    public byte[] Sha256 { get; } = Convert.FromHexString(Sha256Hex);
}

/// <summary>What <see cref="WasmSandbox"/> checks of a module before running it: imports all WASI
/// preview 1 functions we define; exports <c>_start()</c> and a 32-bit memory named <c>memory</c>.</summary>
/// <param name="Problem">Why the module cannot run as a WASI command; null when it can.</param>
/// <param name="MinimumMemoryBytes">The exported memory's initial size in bytes.</param>
internal sealed record ModuleShape(string? Problem, long MinimumMemoryBytes)
{
    private const long WasmPageSize = 65536;

    public static ModuleShape Of(Module module)
    {
        foreach (var import in module.Imports)
        {
            if (import is not FunctionImport || import.ModuleName != WasiPreview1.ModuleName || !WasiPreview1.FunctionNames.Contains(import.Name))
            {
                return new($"unsupported import {import.ModuleName}.{import.Name}", 0);
            }
        }
        var hasStart = false;
        MemoryExport? memory = null;
        foreach (var export in module.Exports)
        {
            if (export is FunctionExport { Name: "_start" } f && f.Parameters.Count == 0 && f.Results.Count == 0) hasStart = true;
            if (export is MemoryExport { Name: "memory" } m) memory = m;
        }
        if (!hasStart) return new("no _start() export: not a WASI command", 0);
        if (memory is null) return new("no exported memory named \"memory\"", 0);
        if (memory.Is64Bit) return new("64-bit memories are not supported", 0);
        return new(null, memory.Minimum * WasmPageSize);
    }
}
