using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Potluck.Interop.Tests;

/// <summary>How to start a <see cref="JsPeer"/>.</summary>
public sealed record JsPeerOptions
{
    /// <summary>Listen multiaddr passed as <c>--listen</c>. Default: an ephemeral loopback TCP port.</summary>
    public string Listen { get; init; } = "/ip4/127.0.0.1/tcp/0";

    /// <summary>Path of an IPFS-format swarm.key; turns on pnet. Default: none.</summary>
    public string? SwarmKeyPath { get; init; }

    /// <summary>32-byte seed for a deterministic Ed25519 identity. Default: a random identity.</summary>
    public byte[]? Seed { get; init; }

    /// <summary>How long to wait for the <c>ready</c> line. Default: 30 s (the first start loads many modules).</summary>
    public TimeSpan StartTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Default per-command timeout, also handed to js as <c>timeoutMs</c>. Default: 60 s.</summary>
    public TimeSpan CommandTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Runs @libp2p/gossipsub (<c>--gossip</c>; StrictSign). Default: off.</summary>
    public bool Gossip { get; init; }

    /// <summary>Runs @libp2p/kad-dht in server mode on this protocol id (<c>--dht</c>), keeping loopback addresses. Default: off.</summary>
    public string? DhtProtocol { get; init; }

    /// <summary>More listen multiaddrs (e.g. <c>&lt;relay&gt;/p2p-circuit</c> with <see cref="RelayClient"/>). Default: none.</summary>
    public IReadOnlyList<string> ExtraListen { get; init; } = [];

    /// <summary>Runs @libp2p/circuit-relay-v2's hop service (<c>--relay-server</c>). Default: off.</summary>
    public bool RelayServer { get; init; }

    /// <summary>Adds @libp2p/circuit-relay-v2's transport (<c>--relay-client</c>). Default: off.</summary>
    public bool RelayClient { get; init; }

    /// <summary>Keeps kad-dht from querying for itself (<c>--dht-no-self-query</c>), so its table holds only peers that connected. Default: false.</summary>
    public bool DhtNoSelfQuery { get; init; }
}

/// <summary>A gossipsub message the js node received (js verified its signature first) on a topic it subscribes to.</summary>
/// <param name="From">The author (the signer), as a peer id string.</param>
/// <param name="Seqno">The author's sequence number.</param>
/// <param name="MsgId">js's message id string (base64 of from ‖ seqno, no padding).</param>
/// <param name="PropagationSource">The peer that forwarded it to js.</param>
public sealed record JsGossipMessage(string Topic, string? From, byte[] Data, ulong? Seqno, string MsgId, string PropagationSource);

/// <summary>js's gossipsub view of a topic: peers known to subscribe, its mesh, and its own topics.</summary>
public sealed record JsGossipPeers(IReadOnlyList<string> Subscribers, IReadOnlyList<string> Mesh, IReadOnlyList<string> Topics);

/// <summary>A peer found by a kad-dht FIND_NODE query: its addresses and the peer whose response named it.</summary>
public sealed record JsFoundPeer(string Peer, IReadOnlyList<string> Addrs, string From);

/// <summary>js's kad-dht routing table.</summary>
public sealed record JsDhtTable(int Size, IReadOnlyList<string> Peers, string Mode);

/// <summary>What <c>dial</c> reports: the connected peer and the address used.</summary>
public sealed record JsDialResult(string Peer, string RemoteAddr);

/// <summary>What js learned about a remote through identify, read back from its peer store.</summary>
public sealed record JsIdentifyResult(
    string Peer,
    IReadOnlyList<string> Protocols,
    IReadOnlyList<string> ListenAddrs,
    string? AgentVersion,
    string? ProtocolVersion,
    bool PublicKeyPresent,
    string? ObservedAddr,
    bool SignedPeerRecord);

/// <summary>Result of an echo round trip on <c>/potluck/echo/1.0.0</c>.</summary>
public sealed record JsEchoResult(long Sent, long Received, bool Matched, TimeSpan Duration);

/// <summary>Client-side <c>/perf/1.0.0</c> measurement. Upload ends when the first downloaded byte arrives.</summary>
public sealed record JsPerfResult(long UploadBytes, long DownloadBytes, TimeSpan Upload, TimeSpan Download, TimeSpan Total)
{
    /// <summary>Upload throughput in MB/s (10^6 bytes per second).</summary>
    public double UploadMBps => UploadBytes / 1e6 / Upload.TotalSeconds;

    /// <summary>Download throughput in MB/s (10^6 bytes per second).</summary>
    public double DownloadMBps => DownloadBytes / 1e6 / Download.TotalSeconds;
}

/// <summary>One open connection of the js node.</summary>
public sealed record JsConnection(string Peer, string RemoteAddr, string Direction, string Status, int Streams);

/// <summary>A command the js peer answered with <c>ok:false</c>.</summary>
public sealed class JsPeerCommandException(string message) : Exception(message);

/// <summary>
/// A js-libp2p node (tests/Interop/js/peer.mjs) running as a child process, driven by JSON lines on
/// stdin/stdout. Every call is bounded by a timeout; failures carry the tail of the node's stderr.
/// </summary>
public sealed class JsPeer : IAsyncDisposable
{
    private const int StderrKeepChars = 16_000;

    private readonly Process _process;
    private readonly JsPeerOptions _options;
    private readonly ConcurrentDictionary<long, TaskCompletionSource<JsonElement>> _pending = new();
    private readonly TaskCompletionSource<JsonElement> _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly StringBuilder _stderr = new();
    private readonly List<JsonElement> _events = [];
    private TaskCompletionSource _eventSignal = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Task _stdoutPump;
    private readonly int _pid;
    private long _nextId;
    private volatile bool _exited;
    private int _disposed;

    private JsPeer(Process process, JsPeerOptions options)
    {
        _process = process;
        _options = options;
        _pid = process.Id;
        _process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null)
            {
                return;
            }

            lock (_stderr)
            {
                _stderr.AppendLine(e.Data);
                if (_stderr.Length > StderrKeepChars * 2)
                {
                    _stderr.Remove(0, _stderr.Length - StderrKeepChars);
                }
            }
        };
        _process.BeginErrorReadLine();
        _stdoutPump = Task.Run(PumpStdoutAsync);
    }

    /// <summary>The js node's peer id.</summary>
    public string PeerId { get; private set; } = "";

    /// <summary>The js node's listen addresses, each ending in <c>/p2p/&lt;PeerId&gt;</c>.</summary>
    public IReadOnlyList<string> Addrs { get; private set; } = [];

    /// <summary>The first listen address (convenience for loopback tests).</summary>
    public string Addr => Addrs.Count > 0 ? Addrs[0] : throw new InvalidOperationException("js peer has no listen address");

    /// <summary>The OS process id of the node process.</summary>
    public int ProcessId => _pid;

    /// <summary>Whether the node process has exited.</summary>
    public bool HasExited => _exited || Volatile.Read(ref _disposed) != 0 || _process.HasExited;

    /// <summary>The last part of what the node wrote to stderr.</summary>
    public string Stderr
    {
        get
        {
            lock (_stderr)
            {
                return _stderr.Length <= StderrKeepChars ? _stderr.ToString() : _stderr.ToString(_stderr.Length - StderrKeepChars, StderrKeepChars);
            }
        }
    }

    /// <summary>The folder holding peer.mjs: <c>&lt;repo root with Node.sln&gt;/tests/Interop/js</c>.</summary>
    public static string JsDirectory { get; } = FindJsDirectory();

    /// <summary>Starts a node and waits for its <c>ready</c> line.</summary>
    public static async Task<JsPeer> StartAsync(JsPeerOptions? options = null, CancellationToken ct = default)
    {
        options ??= new JsPeerOptions();
        if (!Directory.Exists(Path.Combine(JsDirectory, "node_modules", "libp2p")))
        {
            throw new InvalidOperationException(
                $"js dependencies are not installed in {JsDirectory}: run `npm ci --prefix tests/Interop/js` from the repository root.");
        }

        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("POTLUCK_NODE") ?? "node")
        {
            WorkingDirectory = JsDirectory,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            StandardInputEncoding = new UTF8Encoding(false),
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        start.ArgumentList.Add("peer.mjs");
        start.ArgumentList.Add("--listen");
        start.ArgumentList.Add(options.Listen);
        foreach (var extra in options.ExtraListen)
        {
            start.ArgumentList.Add("--listen");
            start.ArgumentList.Add(extra);
        }
        if (options.RelayServer)
        {
            start.ArgumentList.Add("--relay-server");
        }
        if (options.RelayClient)
        {
            start.ArgumentList.Add("--relay-client");
        }
        if (options.SwarmKeyPath is not null)
        {
            start.ArgumentList.Add("--swarm-key");
            start.ArgumentList.Add(options.SwarmKeyPath);
        }

        if (options.Gossip)
        {
            start.ArgumentList.Add("--gossip");
        }

        if (options.DhtProtocol is not null)
        {
            start.ArgumentList.Add("--dht");
            start.ArgumentList.Add(options.DhtProtocol);
        }

        if (options.DhtNoSelfQuery)
        {
            start.ArgumentList.Add("--dht-no-self-query");
        }

        if (options.Seed is not null)
        {
            if (options.Seed.Length != 32)
            {
                throw new ArgumentException("seed must be 32 bytes", nameof(options));
            }

            start.ArgumentList.Add("--seed");
            start.ArgumentList.Add(Convert.ToHexStringLower(options.Seed));
        }

        Process process;
        try
        {
            process = Process.Start(start) ?? throw new InvalidOperationException("node did not start");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException("could not run `node` (Node.js 20+ must be on PATH, or set POTLUCK_NODE)", e);
        }

        var peer = new JsPeer(process, options);
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(options.StartTimeout);
            JsonElement ready;
            try
            {
                ready = await peer._ready.Task.WaitAsync(timeout.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                throw new TimeoutException($"js peer not ready within {options.StartTimeout}.{peer.StderrSuffix()}");
            }

            peer.PeerId = ready.GetProperty("peerId").GetString() ?? "";
            peer.Addrs = [.. ready.GetProperty("addrs").EnumerateArray().Select(a => a.GetString() ?? "")];
            return peer;
        }
        catch
        {
            await peer.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Writes a swarm.key file in the IPFS format (<c>/key/swarm/psk/1.0.0/</c>, base16).</summary>
    public static void WriteSwarmKey(string path, ReadOnlySpan<byte> key)
    {
        if (key.Length != 32)
        {
            throw new ArgumentException("a swarm key is 32 bytes", nameof(key));
        }

        File.WriteAllText(path, $"/key/swarm/psk/1.0.0/\n/base16/\n{Convert.ToHexStringLower(key)}\n");
    }

    /// <summary>Connects to <paramref name="addr"/> (a multiaddr, or a peer id js already knows).</summary>
    public async Task<JsDialResult> DialAsync(string addr, CancellationToken ct = default, TimeSpan? timeout = null)
    {
        var r = await SendAsync("dial", new() { ["addr"] = addr }, timeout, ct).ConfigureAwait(false);
        return new JsDialResult(Str(r, "peer")!, Str(r, "remoteAddr")!);
    }

    /// <summary>Runs <c>/ipfs/ping/1.0.0</c> once; returns the round trip time.</summary>
    public async Task<TimeSpan> PingAsync(string addrOrPeer, CancellationToken ct = default)
    {
        var r = await SendAsync("ping", new() { ["addr"] = addrOrPeer }, null, ct).ConfigureAwait(false);
        return TimeSpan.FromMilliseconds(r.GetProperty("rttMs").GetDouble());
    }

    /// <summary>Runs identify against a connected (or dialable) peer and reports js's peer store view of it.</summary>
    public async Task<JsIdentifyResult> IdentifyAsync(string peer, CancellationToken ct = default)
    {
        var r = await SendAsync("identify", new() { ["peer"] = peer }, null, ct).ConfigureAwait(false);
        return new JsIdentifyResult(
            Str(r, "peer")!,
            Strings(r, "protocols"),
            Strings(r, "listenAddrs"),
            Str(r, "agentVersion"),
            Str(r, "protocolVersion"),
            r.GetProperty("publicKeyPresent").GetBoolean(),
            Str(r, "observedAddr"),
            r.GetProperty("signedPeerRecord").GetBoolean());
    }

    /// <summary>Sends <paramref name="bytes"/> of the echo pattern on <c>/potluck/echo/1.0.0</c> and checks what comes back.</summary>
    public async Task<JsEchoResult> EchoAsync(string addrOrPeer, long bytes, CancellationToken ct = default, TimeSpan? timeout = null)
    {
        var r = await SendAsync("echo", new() { ["addr"] = addrOrPeer, ["bytes"] = bytes }, timeout, ct).ConfigureAwait(false);
        return new JsEchoResult(
            r.GetProperty("sent").GetInt64(),
            r.GetProperty("received").GetInt64(),
            r.GetProperty("matched").GetBoolean(),
            Ms(r, "durationMs"));
    }

    /// <summary>Runs the client side of <c>/perf/1.0.0</c>.</summary>
    public async Task<JsPerfResult> PerfAsync(string addrOrPeer, long upload, long download, CancellationToken ct = default, TimeSpan? timeout = null)
    {
        var r = await SendAsync("perf", new() { ["addr"] = addrOrPeer, ["upload"] = upload, ["download"] = download }, timeout, ct)
            .ConfigureAwait(false);
        return new JsPerfResult(
            r.GetProperty("uploadBytes").GetInt64(),
            r.GetProperty("downloadBytes").GetInt64(),
            Ms(r, "uploadMs"),
            Ms(r, "downloadMs"),
            Ms(r, "totalMs"));
    }

    /// <summary>Closes every connection to a peer (peer id or multiaddr).</summary>
    public Task HangupAsync(string addrOrPeer, CancellationToken ct = default) =>
        SendAsync("hangup", new() { ["addr"] = addrOrPeer }, null, ct);

    /// <summary>The node's multiaddrs now (relayed ones once a reservation is held).</summary>
    public async Task<IReadOnlyList<string>> AddrsAsync(CancellationToken ct = default)
    {
        var r = await SendAsync("addrs", new(), null, ct).ConfigureAwait(false);
        return [.. r.GetProperty("addrs").EnumerateArray().Select(a => a.GetString()!)];
    }

    /// <summary>The node's open connections.</summary>
    public async Task<IReadOnlyList<JsConnection>> PeersAsync(CancellationToken ct = default)
    {
        var r = await SendAsync("peers", new(), null, ct).ConfigureAwait(false);
        return
        [
            .. r.GetProperty("peers").EnumerateArray().Select(p => new JsConnection(
                Str(p, "peer")!,
                Str(p, "remoteAddr")!,
                Str(p, "direction")!,
                Str(p, "status")!,
                p.GetProperty("streams").GetInt32())),
        ];
    }

    // ---------------------------------------------------------------- gossipsub (needs Gossip)

    /// <summary>Joins a topic.</summary>
    public Task SubscribeAsync(string topic, CancellationToken ct = default) =>
        SendAsync("subscribe", new() { ["topic"] = topic }, null, ct);

    /// <summary>Leaves a topic.</summary>
    public Task UnsubscribeAsync(string topic, CancellationToken ct = default) =>
        SendAsync("unsubscribe", new() { ["topic"] = topic }, null, ct);

    /// <summary>Publishes a signed message; returns the peers js sent it to.</summary>
    public async Task<IReadOnlyList<string>> PublishAsync(string topic, byte[] data, CancellationToken ct = default)
    {
        var r = await SendAsync("publish", new() { ["topic"] = topic, ["data"] = Convert.ToBase64String(data) }, null, ct).ConfigureAwait(false);
        return Strings(r, "recipients");
    }

    /// <summary>js's subscribers and mesh for a topic.</summary>
    public async Task<JsGossipPeers> GossipPeersAsync(string topic, CancellationToken ct = default)
    {
        var r = await SendAsync("gossipPeers", new() { ["topic"] = topic }, null, ct).ConfigureAwait(false);
        return new JsGossipPeers(Strings(r, "subscribers"), Strings(r, "mesh"), Strings(r, "topics"));
    }

    /// <summary>Every gossipsub message received so far, in arrival order.</summary>
    public IReadOnlyList<JsGossipMessage> Messages
    {
        get
        {
            lock (_events)
            {
                return [.. _events.Where(e => Str(e, "event") == "message").Select(ToMessage)];
            }
        }
    }

    /// <summary>Every event line received so far (messages, subscriptions, grafts, prunes), in order.</summary>
    public IReadOnlyList<JsonElement> Events
    {
        get
        {
            lock (_events)
            {
                return [.. _events];
            }
        }
    }

    /// <summary>Completes when the messages received so far satisfy <paramref name="condition"/>; re-checked on every event.</summary>
    public Task<IReadOnlyList<JsGossipMessage>> WaitForMessagesAsync(Func<IReadOnlyList<JsGossipMessage>, bool> condition, TimeSpan timeout,
        CancellationToken ct = default) =>
        WaitForAsync(() => Messages is var m && condition(m) ? (true, m) : (false, m), timeout, "messages", ct);

    /// <summary>Completes with the first event (past or future) that matches.</summary>
    public Task<JsonElement> WaitForEventAsync(Func<JsonElement, bool> match, TimeSpan timeout, CancellationToken ct = default) =>
        WaitForAsync(() => Events.FirstOrDefault(match) is var e && e.ValueKind != JsonValueKind.Undefined ? (true, e) : (false, e), timeout, "event", ct);

    /// <summary>Completes when js has seen <paramref name="peer"/> subscribe to <paramref name="topic"/>.</summary>
    public Task WaitForSubscriptionAsync(string peer, string topic, TimeSpan timeout, CancellationToken ct = default) =>
        WaitForEventAsync(e => Str(e, "event") == "subscription" && Str(e, "peer") == peer && Str(e, "topic") == topic
            && e.GetProperty("subscribe").GetBoolean(), timeout, ct);

    // ---------------------------------------------------------------- kad-dht (needs DhtProtocol)

    /// <summary>Completes when js's routing table has (at some point) added <paramref name="peer"/>.</summary>
    public Task WaitForDhtPeerAsync(string peer, TimeSpan timeout, CancellationToken ct = default) =>
        WaitForEventAsync(e => Str(e, "event") == "dhtPeerAdded" && Str(e, "peer") == peer, timeout, ct);

    /// <summary>Finds a peer's addresses by a FIND_NODE query over the network (js's local shortcut is skipped).</summary>
    public async Task<JsFoundPeer> FindPeerAsync(string peer, CancellationToken ct = default, TimeSpan? timeout = null)
    {
        var r = await SendAsync("findPeer", new() { ["peer"] = peer }, timeout, ct).ConfigureAwait(false);
        return new JsFoundPeer(Str(r, "peer")!, Strings(r, "addrs"), Str(r, "from")!);
    }

    /// <summary>The closest peers js's query finds to <paramref name="key"/> (a peer's multihash bytes for a peer).</summary>
    public async Task<IReadOnlyList<string>> ClosestPeersAsync(byte[] key, CancellationToken ct = default, TimeSpan? timeout = null)
    {
        var r = await SendAsync("closestPeers", new() { ["key"] = Convert.ToBase64String(key) }, timeout, ct).ConfigureAwait(false);
        return Strings(r, "peers");
    }

    /// <summary>Refreshes js's routing table; returns its size.</summary>
    public async Task<int> DhtBootstrapAsync(CancellationToken ct = default, TimeSpan? timeout = null)
    {
        var r = await SendAsync("dhtBootstrap", new(), timeout, ct).ConfigureAwait(false);
        return r.GetProperty("size").GetInt32();
    }

    /// <summary>js's routing table: size, peers, mode.</summary>
    public async Task<JsDhtTable> DhtTableAsync(CancellationToken ct = default)
    {
        var r = await SendAsync("dhtTable", new(), null, ct).ConfigureAwait(false);
        return new JsDhtTable(r.GetProperty("size").GetInt32(), Strings(r, "peers"), Str(r, "mode")!);
    }

    private async Task<T> WaitForAsync<T>(Func<(bool Done, T Value)> check, TimeSpan timeout, string what, CancellationToken ct)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(timeout);
        while (true)
        {
            Task signal;
            lock (_events)
            {
                signal = _eventSignal.Task;
            }

            var (done, value) = check();
            if (done)
            {
                return value;
            }

            if (HasExited)
            {
                throw new InvalidOperationException($"js peer exited while waiting for {what}.{StderrSuffix()}");
            }

            try
            {
                await signal.WaitAsync(cts.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                throw new TimeoutException($"js peer: no matching {what} within {timeout}.{StderrSuffix()}");
            }
        }
    }

    private static JsGossipMessage ToMessage(JsonElement e) => new(
        Str(e, "topic")!,
        Str(e, "from"),
        Convert.FromBase64String(Str(e, "data") ?? ""),
        Str(e, "seqno") is { } s ? ulong.Parse(s, CultureInfo.InvariantCulture) : null,
        Str(e, "msgId")!,
        Str(e, "propagationSource")!);

    /// <summary>
    /// Sends one raw command and returns the reply object. Throws <see cref="JsPeerCommandException"/> for
    /// <c>ok:false</c>, <see cref="TimeoutException"/> when no reply arrives in time, and
    /// <see cref="InvalidOperationException"/> when the process has gone.
    /// </summary>
    public async Task<JsonElement> SendAsync(string command, Dictionary<string, object?> fields, TimeSpan? timeout = null, CancellationToken ct = default)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        var limit = timeout ?? _options.CommandTimeout;
        var id = Interlocked.Increment(ref _nextId);
        var message = new Dictionary<string, object?>(fields)
        {
            ["id"] = id,
            ["cmd"] = command,
            ["timeoutMs"] = (long)limit.TotalMilliseconds,
        };
        var reply = new TaskCompletionSource<JsonElement>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pending[id] = reply;
        try
        {
            if (HasExited)
            {
                throw new InvalidOperationException($"js peer has exited.{StderrSuffix()}");
            }

            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            // js aborts at the same limit and answers with an error; the extra margin lets that answer win.
            cts.CancelAfter(limit + TimeSpan.FromSeconds(5));
            await _writeLock.WaitAsync(cts.Token).ConfigureAwait(false);
            try
            {
                await _process.StandardInput.WriteLineAsync(JsonSerializer.Serialize(message).AsMemory(), cts.Token).ConfigureAwait(false);
                await _process.StandardInput.FlushAsync(cts.Token).ConfigureAwait(false);
            }
            finally
            {
                _writeLock.Release();
            }

            JsonElement result;
            try
            {
                result = await reply.Task.WaitAsync(cts.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                throw new TimeoutException($"js peer did not answer `{command}` within {limit}.{StderrSuffix()}");
            }

            if (!result.GetProperty("ok").GetBoolean())
            {
                throw new JsPeerCommandException($"js `{command}` failed: {Str(result, "error")}");
            }

            return result;
        }
        catch (IOException e)
        {
            throw new InvalidOperationException($"js peer stdin closed.{StderrSuffix()}", e);
        }
        finally
        {
            _pending.TryRemove(id, out _);
        }
    }

    /// <summary>Kills the node process tree and waits for it to go.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
            }

            using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            await _process.WaitForExitAsync(wait.Token).ConfigureAwait(false);
            await _stdoutPump.WaitAsync(wait.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is InvalidOperationException or OperationCanceledException)
        {
            // Already gone, or refuses to die: nothing more a test can do.
        }
        finally
        {
            _process.Dispose();
            _writeLock.Dispose();
        }
    }

    private async Task PumpStdoutAsync()
    {
        try
        {
            while (await _process.StandardOutput.ReadLineAsync().ConfigureAwait(false) is { } line)
            {
                if (line.Length == 0)
                {
                    continue;
                }

                JsonElement msg;
                try
                {
                    using var doc = JsonDocument.Parse(line);
                    msg = doc.RootElement.Clone();
                }
                catch (JsonException)
                {
                    lock (_stderr)
                    {
                        _stderr.AppendLine($"[stdout, not JSON] {line}");
                    }

                    continue;
                }

                if (msg.TryGetProperty("event", out var ev) && ev.GetString() == "ready")
                {
                    _ready.TrySetResult(msg);
                }
                else if (ev.ValueKind == JsonValueKind.String)
                {
                    TaskCompletionSource signal;
                    lock (_events)
                    {
                        _events.Add(msg);
                        signal = _eventSignal;
                        _eventSignal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    }

                    signal.TrySetResult();
                }
                else if (msg.TryGetProperty("id", out var idElement) && idElement.ValueKind == JsonValueKind.Number
                    && _pending.TryGetValue(idElement.GetInt64(), out var waiter))
                {
                    waiter.TrySetResult(msg);
                }
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
        {
            // The process went away; handled below.
        }

        _exited = true;
        lock (_events)
        {
            _eventSignal.TrySetResult();
        }

        var gone = new InvalidOperationException($"js peer exited.{StderrSuffix()}");
        _ready.TrySetException(gone);
        foreach (var waiter in _pending.Values)
        {
            waiter.TrySetException(gone);
        }
    }

    private string StderrSuffix()
    {
        var err = Stderr;
        return err.Length == 0 ? " (stderr empty)" : $"\n--- js stderr ---\n{err}";
    }

    private static string FindJsDirectory() => Potluck.Tests.RepositoryRoot.Combine("tests", "Interop", "js");

    private static string? Str(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static IReadOnlyList<string> Strings(JsonElement e, string name) =>
        [.. e.GetProperty(name).EnumerateArray().Select(v => v.GetString() ?? "")];

    private static TimeSpan Ms(JsonElement e, string name) =>
        TimeSpan.FromMilliseconds(e.GetProperty(name).GetDouble());

    /// <inheritdoc/>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"JsPeer({PeerId}, pid {_pid})");
}
