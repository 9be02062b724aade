using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Node.Cli;
using Potluck.Node.Control;

namespace Potluck.Node.Tests.Control;

[CancelAfter(30_000)]
public class ControlEndpointTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Path.Combine(Path.GetTempPath(), "pl-ctl-" + Guid.NewGuid().ToString("N")[..12]);

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(_dir))
        {
            Directory.Delete(_dir, true);
        }
    }

    private async Task<ControlServer> StartServerAsync(ControlOptions? options = null)
    {
        var server = new ControlServer(_dir, options ?? new ControlOptions(), TimeProvider.System, NullLoggerFactory.Instance);
        server.Register("echo", (p, _) => ValueTask.FromResult<JsonNode?>(JsonNode.Parse(p.GetRawText())));
        server.Register("refuse", (_, _) => throw new ControlException(ControlErrorCode.BadRequest, "no thanks"));
        server.Register("bug", (_, _) => throw new InvalidCastException("oops"));
        await server.StartAsync(CancellationToken.None);
        return server;
    }

    /// <summary>Sends raw bytes on a fresh connection and reads lines until the server closes it.</summary>
    private static async Task<List<JsonObject>> RawAsync(string path, byte[] bytes, CancellationToken ct)
    {
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), ct);
        await using var stream = new NetworkStream(socket, ownsSocket: false);
        await stream.WriteAsync(bytes, ct);
        socket.Shutdown(SocketShutdown.Send);
        using var reader = new StreamReader(stream, Encoding.UTF8);
        var lines = new List<JsonObject>();
        try
        {
            while (await reader.ReadLineAsync(ct) is { } line)
            {
                lines.Add(JsonNode.Parse(line)!.AsObject());
            }
        }
        catch (IOException)
        {
            // A server that closes with our input unread resets the connection after its last line.
        }
        return lines;
    }

    [Test]
    public async Task Call_RoundTripsParamsAndResult_SeveralRequestsOnOneConnection(CancellationToken ct)
    {
        await using var server = await StartServerAsync();
        await using var client = await ControlClient.ConnectAsync(_dir, null, ct);
        var first = await client.CallAsync("echo", new JsonObject { ["x"] = 1, ["s"] = "é\n" }, ct);
        var second = await client.CallAsync("echo", null, ct);
        Assert.That(first!["x"]!.GetValue<int>(), Is.EqualTo(1));
        Assert.That(first["s"]!.GetValue<string>(), Is.EqualTo("é\n"));
        Assert.That(second!.AsObject(), Is.Empty);
    }

    [Test]
    public async Task Errors_AreTyped_UnknownMethod_HandlerRefusal_AndBugs(CancellationToken ct)
    {
        await using var server = await StartServerAsync();
        await using var client = await ControlClient.ConnectAsync(_dir, null, ct);
        var unknown = Assert.ThrowsAsync<ControlException>(() => client.CallAsync("nope", null, ct))!;
        Assert.That(unknown.Code, Is.EqualTo(ControlErrorCode.UnknownMethod));
        Assert.That(unknown.Message, Does.Contain("'nope'").And.Contain("echo"));
        var refused = Assert.ThrowsAsync<ControlException>(() => client.CallAsync("refuse", null, ct))!;
        Assert.That(refused.Code, Is.EqualTo(ControlErrorCode.BadRequest));
        Assert.That(refused.Message, Is.EqualTo("no thanks"));
        var bug = Assert.ThrowsAsync<ControlException>(() => client.CallAsync("bug", null, ct))!;
        Assert.That(bug.Code, Is.EqualTo(ControlErrorCode.Internal));
        Assert.That(bug.Message, Does.Not.Contain("oops"), "internal details stay in the node's log");
        // The connection still works after errors.
        Assert.That(await client.CallAsync("echo", null, ct), Is.Not.Null);
    }

    [TestCase("not json\n", "bad_request")]
    [TestCase("[1,2]\n", "bad_request")]
    [TestCase("{\"method\":5}\n", "bad_request")]
    [TestCase("{\"method\":\"echo\",\"params\":[1]}\n", "bad_request")]
    [TestCase("{\"method\":\"echo\"", "")]
    public async Task MalformedRequests_AreAnsweredWithBadRequest(string raw, string code)
    {
        await using var server = await StartServerAsync();
        var responses = await RawAsync(server.SocketPath, Encoding.UTF8.GetBytes(raw), CancellationToken.None);
        if (code == "")
        {
            Assert.That(responses, Is.Empty, "an unterminated line at end of stream is dropped");
            return;
        }
        Assert.That(responses, Has.Count.EqualTo(1));
        Assert.That(responses[0]["ok"]!.GetValue<bool>(), Is.False);
        Assert.That(responses[0]["error"]!["code"]!.GetValue<string>(), Is.EqualTo(code));
    }

    [Test]
    public async Task OverlongLine_IsRefused_AndTheConnectionClosed(CancellationToken ct)
    {
        await using var server = await StartServerAsync(new ControlOptions { MaxRequestLength = 1024 });
        var request = "{\"method\":\"echo\",\"params\":{\"pad\":\"" + new string('a', 4096) + "\"}}\n{\"method\":\"echo\"}\n";
        var responses = await RawAsync(server.SocketPath, Encoding.UTF8.GetBytes(request), ct);
        Assert.That(responses, Has.Count.EqualTo(1), "nothing after the overlong line is read");
        Assert.That(responses[0]["error"]!["code"]!.GetValue<string>(), Is.EqualTo("line_too_long"));
    }

    [Test]
    public async Task Socket_IsOwnerOnly_ASecondServerOnTheSameDirIsRefused_AndAStaleSocketIsReplaced(CancellationToken ct)
    {
        var server = await StartServerAsync();
        if (!OperatingSystem.IsWindows())
        {
            Assert.That(File.GetUnixFileMode(server.SocketPath), Is.EqualTo(UnixFileMode.UserRead | UnixFileMode.UserWrite));
        }
        var second = new ControlServer(_dir, new ControlOptions(), TimeProvider.System, NullLoggerFactory.Instance);
        var refused = Assert.ThrowsAsync<IOException>(() => second.StartAsync(ct))!;
        Assert.That(refused.Message, Does.Contain("already running with data dir"));
        await server.DisposeAsync();
        Assert.That(File.Exists(server.SocketPath), Is.False, "a clean stop removes the socket");

        // A crashed node leaves a socket file nobody listens on (bound, never listening: connecting is refused).
        using var stale = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        stale.Bind(new UnixDomainSocketEndPoint(server.SocketPath));
        Assert.That(File.Exists(server.SocketPath), Is.True);
        await using var replacement = await StartServerAsync();
        await using var client = await ControlClient.ConnectAsync(_dir, null, ct);
        Assert.That(await client.CallAsync("echo", null, ct), Is.Not.Null);
    }

    [Test]
    public async Task Connect_WithNoNodeRunning_SaysSoAndHowToStartOne(CancellationToken ct)
    {
        var missing = Assert.ThrowsAsync<NodeNotRunningException>(() => ControlClient.ConnectAsync(_dir, null, ct))!;
        Assert.That(missing.Message, Is.EqualTo($"no node is running with data dir {_dir}; start one with potluck run"));

        Directory.CreateDirectory(_dir);
        using var stale = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        stale.Bind(new UnixDomainSocketEndPoint(ControlProtocol.SocketPath(_dir)));
        Assert.That(File.Exists(ControlProtocol.SocketPath(_dir)), Is.True);
        Assert.ThrowsAsync<NodeNotRunningException>(() => ControlClient.ConnectAsync(_dir, null, ct));

        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = await Commands.RunAsync(["peers", "--data-dir", _dir], stdout, stderr);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr.ToString(), Does.Contain($"no node is running with data dir {_dir}; start one with potluck run"));
    }

    [Test]
    public async Task PeersMethod_OnNodesInMemory_ListsTheConnectedPeer_AndTheTableShowsIt(CancellationToken ct)
    {
        await using var nodes = new TestNodes(seed: 9);
        var a = await nodes.StartAsync(nodes.Options());
        var b = await nodes.StartAsync(nodes.Options() with { Bootstrap = [a.FullAddresses[0]] });
        await b.Joined.WaitAsync(ct);
        await b.Identify.WhenIdentifiedAsync(a.PeerId, ct);
        await using var server = new ControlServer(_dir, new ControlOptions(), TimeProvider.System, NullLoggerFactory.Instance);
        NodeControl.Register(server, b);
        await server.StartAsync(ct);
        await using var client = await ControlClient.ConnectAsync(_dir, null, ct);

        var peers = await client.CallAsync(NodeControl.PeersMethod, new JsonObject { ["ping"] = true }, ControlJson.Default.PeersResult, ct);
        var row = peers.Peers.Single();
        Assert.That(row.PeerId, Is.EqualTo(a.PeerId.ToString()));
        Assert.That(row.Direction, Is.EqualTo("outbound"));
        Assert.That(row.Address, Is.EqualTo(a.Host.ListenAddresses[0].ToString()));
        Assert.That(row.LatencyMs, Is.Not.Null);
        Assert.That(row.Agent, Does.StartWith("potluck/"));
        Assert.That(row.Protocols, Does.Contain("/potluck/kad/1.0.0"));
        var table = Commands.FormatPeers(peers);
        Assert.That(table, Does.Contain("PEER ID").And.Contain(a.PeerId.ToString()).And.Contain("outbound").And.Contain(" ms").And.Contain("1 peer"));

        var bad = Assert.ThrowsAsync<ControlException>(() => client.CallAsync(NodeControl.PeersMethod, new JsonObject { ["ping"] = "yes" }, ct))!;
        Assert.That(bad.Code, Is.EqualTo(ControlErrorCode.BadRequest));

        var status = await client.CallAsync(NodeControl.StatusMethod, null, ct);
        Assert.That(status!["peer_id"]!.GetValue<string>(), Is.EqualTo(b.PeerId.ToString()));
        Assert.That(status["connections"]!.GetValue<int>(), Is.EqualTo(1));
        Assert.That(status["routing_table"]!.GetValue<int>(), Is.EqualTo(1));
        Assert.That(JsonSerializer.Serialize(status), Does.Contain("\"mdns\":false"));
    }
}
