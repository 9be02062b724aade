using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Node.Cli;
using Potluck.Node.Control;

namespace Potluck.Node.Tests.Control;

/// <summary>The control API over HTTP on loopback: the token, typed errors, bounds, the data directory's files.</summary>
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

    private static ControlOptions AnyPort(int maxRequest = 64 * 1024) => new() { Endpoint = new IPEndPoint(IPAddress.Loopback, 0), MaxRequestLength = maxRequest };

    private async Task<ControlServer> StartServerAsync(ControlOptions? options = null)
    {
        var server = new ControlServer(_dir, options ?? AnyPort(), NullLoggerFactory.Instance);
        server.Register("echo", (p, _) => ValueTask.FromResult<JsonNode?>(JsonNode.Parse(p.GetRawText())));
        server.Register("refuse", (_, _) => throw new ControlException(ControlErrorCode.BadRequest, "no thanks"));
        server.Register("bug", (_, _) => throw new InvalidCastException("oops"));
        await server.StartAsync(CancellationToken.None);
        return server;
    }

    private static async Task<(HttpStatusCode Status, JsonObject? Body)> RawAsync(Uri address, string method, string path, string? token, byte[]? body, CancellationToken ct)
    {
        using var http = new HttpClient { BaseAddress = address };
        using var request = new HttpRequestMessage(new HttpMethod(method), path);
        if (token is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }
        if (body is not null)
        {
            request.Content = new ByteArrayContent(body);
        }
        using var response = await http.SendAsync(request, ct);
        var text = await response.Content.ReadAsStringAsync(ct);
        return (response.StatusCode, text.Length == 0 ? null : JsonNode.Parse(text) as JsonObject);
    }

    [Test]
    public async Task Call_RoundTripsParamsAndResult(CancellationToken ct)
    {
        await using var server = await StartServerAsync();
        await using var client = await ControlClient.ConnectAsync(_dir, null, ct);
        var first = await client.CallAsync("echo", new JsonObject { ["x"] = 1, ["s"] = "é\n" }, ct);
        var second = await client.CallAsync("echo", null, ct);
        Assert.That(first!["x"]!.GetValue<int>(), Is.EqualTo(1));
        Assert.That(first["s"]!.GetValue<string>(), Is.EqualTo("é\n"));
        Assert.That(second!.AsObject(), Is.Empty);
        Assert.That(client.Address.IsLoopback, Is.True);
    }

    [Test]
    public async Task Token_MissingOrWrong_IsRefusedWith401_AndNothingRuns(CancellationToken ct)
    {
        await using var server = await StartServerAsync();
        var ran = 0;
        server.Register("count", (_, _) => { ran++; return ValueTask.FromResult<JsonNode?>(null); });
        var none = await RawAsync(server.Address!, "POST", "api/v1/count", null, [], ct);
        var wrong = await RawAsync(server.Address!, "POST", "api/v1/count", new string('A', server.Token.Length), [], ct);
        var prefix = await RawAsync(server.Address!, "POST", "api/v1/count", server.Token[..^1], [], ct);
        var metrics = await RawAsync(server.Address!, "GET", "metrics", "nope", null, ct);
        foreach (var (status, body) in new[] { none, wrong, prefix, metrics })
        {
            Assert.That(status, Is.EqualTo(HttpStatusCode.Unauthorized));
            Assert.That(body!["error"]!["code"]!.GetValue<string>(), Is.EqualTo("unauthorized"));
            Assert.That(body["error"]!["message"]!.GetValue<string>(), Does.Contain(ControlFiles.TokenFileName));
        }
        Assert.That(ran, Is.Zero);
        await using var wrongClient = ControlClient.Create(server.Address!, "x" + server.Token, _dir);
        var refused = Assert.ThrowsAsync<ControlException>(() => wrongClient.CallAsync("count", null, ct))!;
        Assert.That(refused.Code, Is.EqualTo(ControlErrorCode.Unauthorized));
        var ok = await RawAsync(server.Address!, "POST", "api/v1/count", server.Token, [], ct);
        Assert.That(ok.Status, Is.EqualTo(HttpStatusCode.OK));
        Assert.That(ran, Is.EqualTo(1));
    }

    [Test]
    public async Task Files_TokenAndEndpointAreOwnerOnly_TokenIsKeptAcrossRestarts_EndpointRemovedOnStop(CancellationToken ct)
    {
        var server = await StartServerAsync();
        var token = server.Token;
        Assert.That(token, Has.Length.GreaterThanOrEqualTo(43));
        if (!OperatingSystem.IsWindows())
        {
            Assert.That(File.GetUnixFileMode(ControlFiles.TokenPath(_dir)), Is.EqualTo(UnixFileMode.UserRead | UnixFileMode.UserWrite));
            Assert.That(File.GetUnixFileMode(ControlFiles.EndpointPath(_dir)), Is.EqualTo(UnixFileMode.UserRead | UnixFileMode.UserWrite));
        }
        var second = new ControlServer(_dir, AnyPort(), NullLoggerFactory.Instance);
        var refused = Assert.ThrowsAsync<IOException>(() => second.StartAsync(ct))!;
        Assert.That(refused.Message, Does.Contain("already running with data dir"));
        await server.DisposeAsync();
        Assert.That(File.Exists(ControlFiles.EndpointPath(_dir)), Is.False, "a clean stop removes control.json");
        await using var again = await StartServerAsync();
        Assert.That(again.Token, Is.EqualTo(token), "the token is kept, so a scrape configuration stays valid");
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
        Assert.That(await client.CallAsync("echo", null, ct), Is.Not.Null);
    }

    [TestCase("not json", HttpStatusCode.BadRequest)]
    [TestCase("[1,2]", HttpStatusCode.BadRequest)]
    [TestCase("\"text\"", HttpStatusCode.BadRequest)]
    [TestCase("{\"a\":", HttpStatusCode.BadRequest)]
    [TestCase("{}", HttpStatusCode.OK)]
    [TestCase("", HttpStatusCode.OK)]
    public async Task MalformedParams_AreAnsweredWithBadRequest(string raw, HttpStatusCode expected)
    {
        await using var server = await StartServerAsync();
        var (status, body) = await RawAsync(server.Address!, "POST", "api/v1/echo", server.Token, Encoding.UTF8.GetBytes(raw), CancellationToken.None);
        Assert.That(status, Is.EqualTo(expected));
        Assert.That(body!["ok"]!.GetValue<bool>(), Is.EqualTo(expected == HttpStatusCode.OK));
        if (expected != HttpStatusCode.OK)
        {
            Assert.That(body["error"]!["code"]!.GetValue<string>(), Is.EqualTo("bad_request"));
        }
    }

    [Test]
    public async Task WrongPathOrVerb_Is404WithWhatTheApiIs_InvalidUtf8IsRefused(CancellationToken ct)
    {
        await using var server = await StartServerAsync();
        var get = await RawAsync(server.Address!, "GET", "api/v1/echo", server.Token, null, ct);
        Assert.That(get.Status, Is.EqualTo(HttpStatusCode.NotFound));
        Assert.That(get.Body!["error"]!["message"]!.GetValue<string>(), Does.Contain("POST /api/v1/<method>"));
        var utf8 = await RawAsync(server.Address!, "POST", "api/v1/echo", server.Token, [(byte)'{', (byte)'"', 0xC3, 0x28, (byte)'"', (byte)':', (byte)'1', (byte)'}'], ct);
        Assert.That(utf8.Status, Is.EqualTo(HttpStatusCode.BadRequest));
    }

    [Test]
    public async Task OverlongBody_IsRefusedWith413_NotRead(CancellationToken ct)
    {
        await using var server = await StartServerAsync(AnyPort(maxRequest: 1024));
        var body = Encoding.UTF8.GetBytes("{\"pad\":\"" + new string('a', 64 * 1024) + "\"}");
        var (status, answer) = await RawAsync(server.Address!, "POST", "api/v1/echo", server.Token, body, ct);
        Assert.That(status, Is.EqualTo(HttpStatusCode.RequestEntityTooLarge));
        if (answer is not null)
        {
            Assert.That(answer["error"]!["code"]!.GetValue<string>(), Is.EqualTo("line_too_long"));
        }
    }

    [Test]
    public async Task Connect_WithNoNodeRunning_SaysSoAndHowToStartOne(CancellationToken ct)
    {
        var missing = Assert.ThrowsAsync<NodeNotRunningException>(() => ControlClient.ConnectAsync(_dir, null, ct))!;
        Assert.That(missing.Message, Does.StartWith($"no node is running with data dir {_dir}; start one with potluck run"));

        // A node that crashed leaves control.json pointing at a port nobody listens on.
        var server = await StartServerAsync();
        var address = server.Address!;
        var endpoint = File.ReadAllText(ControlFiles.EndpointPath(_dir));
        await server.DisposeAsync();
        File.WriteAllText(ControlFiles.EndpointPath(_dir), endpoint);
        await using var stale = await ControlClient.ConnectAsync(_dir, null, ct);
        Assert.ThrowsAsync<NodeNotRunningException>(() => stale.CallAsync("echo", null, ct));

        var stdout = new StringWriter();
        var stderr = new StringWriter();
        foreach (var command in new[] { "peers", "status", "leases" })
        {
            var code = await Commands.RunAsync([command, "--data-dir", _dir], stdout, stderr);
            Assert.That(code, Is.EqualTo(1), command);
        }
        Assert.That(stderr.ToString(), Does.Contain($"no node is running with data dir {_dir}; start one with potluck run"));
        Assert.That(stderr.ToString(), Does.Not.Contain("   at "), "no stack trace");
        _ = address;
    }

    [Test]
    public async Task PeersAndStatus_OnNodesInMemory_OneRowPerPeer(CancellationToken ct)
    {
        await using var nodes = new TestNodes(seed: 9);
        var a = await nodes.StartAsync(nodes.Options());
        var b = await nodes.StartAsync(nodes.Options() with { Bootstrap = [a.FullAddresses[0]] });
        await b.Joined.WaitAsync(ct);
        await b.Identify.WhenIdentifiedAsync(a.PeerId, ct);
        await using var server = new ControlServer(_dir, AnyPort(), NullLoggerFactory.Instance);
        NodeControl.Register(server, b);
        await server.StartAsync(ct);
        await using var client = await ControlClient.ConnectAsync(_dir, null, ct);

        var peers = await client.CallAsync(NodeControl.PeersMethod, new JsonObject { ["ping"] = true }, ControlJson.Default.PeersResult, ct);
        var row = peers.Peers.Single();
        Assert.That(row.PeerId, Is.EqualTo(a.PeerId.ToString()));
        Assert.That(row.Direction, Is.EqualTo("outbound"));
        Assert.That(row.Connections, Is.EqualTo(1));
        Assert.That(row.Address, Is.EqualTo(a.Host.ListenAddresses[0].ToString()));
        Assert.That(row.LatencyMs, Is.Not.Null);
        Assert.That(row.Agent, Does.StartWith("potluck/"));
        Assert.That(row.Protocols, Does.Contain("/potluck/kad/1.0.0"));
        var table = Commands.FormatPeers(peers);
        Assert.That(table, Does.Contain("PEER ID").And.Contain(a.PeerId.ToString()).And.Contain("outbound").And.Contain(" ms").And.Contain("1 peer"));

        var bad = Assert.ThrowsAsync<ControlException>(() => client.CallAsync(NodeControl.PeersMethod, new JsonObject { ["ping"] = "yes" }, ct))!;
        Assert.That(bad.Code, Is.EqualTo(ControlErrorCode.BadRequest));

        var status = (JsonObject)(await client.CallAsync(NodeControl.StatusMethod, null, ct))!;
        Assert.That(status["peer_id"]!.GetValue<string>(), Is.EqualTo(b.PeerId.ToString()));
        Assert.That(status["peers"]!.GetValue<int>(), Is.EqualTo(1));
        Assert.That(status["connections"]!.GetValue<int>(), Is.EqualTo(1));
        Assert.That(status["routing_table"]!.GetValue<int>(), Is.EqualTo(1));
        Assert.That(status["why_no_work"]!.GetValue<string>(), Does.Contain("compute is off"));
        Assert.That(HomeCommands.FormatStatus(status), Does.Contain("Peer ID:").And.Contain(b.PeerId.ToString()).And.Contain("No work:"));
    }
}
