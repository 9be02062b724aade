using System.Net;
using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Node.Control;
using Potluck.Protocol.Runtime;

namespace Potluck.Node.Tests.Control;

/// <summary>
/// The control API's bounded work queue: a burst of clients is answered or told 503 with Retry-After, nothing hangs,
/// and the client retries a 503 a bounded number of times (on an injected clock).
/// </summary>
[CancelAfter(60_000)]
public class ControlQueueTests
{
    private string _dir = "";
    private TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private TaskCompletionSource _allEntered = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _entered;
    private int _expectEntered;

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "pl-ctlq-" + Guid.NewGuid().ToString("N")[..12]);
        _release = new(TaskCreationOptions.RunContinuationsAsynchronously);
        _allEntered = new(TaskCreationOptions.RunContinuationsAsynchronously);
        _entered = 0;
    }

    [TearDown]
    public void TearDown()
    {
        _release.TrySetResult();
        if (Directory.Exists(_dir))
        {
            Directory.Delete(_dir, true);
        }
    }

    private async Task<ControlServer> StartAsync(ControlOptions options, int expectEntered)
    {
        _expectEntered = expectEntered;
        var server = new ControlServer(_dir, options, NullLoggerFactory.Instance);
        server.Register("hold", async (_, ct) =>
        {
            if (Interlocked.Increment(ref _entered) == _expectEntered)
            {
                _allEntered.TrySetResult();
            }
            await _release.Task.WaitAsync(ct);
            return new JsonObject { ["held"] = true };
        });
        server.Register("echo", (p, _) => ValueTask.FromResult<JsonNode?>(JsonNode.Parse(p.GetRawText())));
        await server.StartAsync(CancellationToken.None);
        return server;
    }

    private static ControlOptions Small(int inFlight, int queued, int retries = 5) => new()
    {
        Endpoint = new IPEndPoint(IPAddress.Loopback, 0), MaxClients = inFlight, MaxQueued = queued, BusyRetries = retries,
    };

    private static async Task<(HttpStatusCode Status, string? Code, TimeSpan? RetryAfter)> PostAsync(HttpClient http, string token, string method, CancellationToken ct)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "api/v1/" + method) { Content = new StringContent("{}") };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        using var response = await http.SendAsync(request, ct);
        var body = JsonNode.Parse(await response.Content.ReadAsStringAsync(ct));
        return (response.StatusCode, body?["error"]?["code"]?.GetValue<string>(), response.Headers.RetryAfter?.Delta);
    }

    [Test]
    public async Task Burst_200Parallel_AreAnsweredOrToldBusy_NoneHang_AndTheNodeStaysFine(CancellationToken ct)
    {
        await using var server = await StartAsync(Small(inFlight: 4, queued: 20), expectEntered: 4);
        using var http = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { BaseAddress = server.Address };
        var calls = Enumerable.Range(0, 200).Select(_ => PostAsync(http, server.Token, "hold", ct)).ToList();

        // 4 in flight and 20 queued are held; every other request must be answered 503 at once, while they are held.
        var pending = calls.ToList();
        var refused = new List<(HttpStatusCode Status, string? Code, TimeSpan? RetryAfter)>();
        while (refused.Count < 176)
        {
            var done = await Task.WhenAny(pending);
            pending.Remove(done);
            refused.Add(await done);
        }
        await _allEntered.Task.WaitAsync(ct);
        Assert.Multiple(() =>
        {
            Assert.That(refused.Select(r => r.Status), Is.All.EqualTo(HttpStatusCode.ServiceUnavailable));
            Assert.That(refused.Select(r => r.Code), Is.All.EqualTo("busy"));
            Assert.That(refused.Select(r => r.RetryAfter), Is.All.EqualTo(TimeSpan.FromSeconds(1)));
            Assert.That(pending, Has.Count.EqualTo(24), "4 in flight + 20 queued are still waiting for the handler");
            Assert.That(server.InFlight, Is.EqualTo(4));
            Assert.That(_entered, Is.EqualTo(4), "no more than 4 handlers run at once");
            Assert.That(server.Refused, Is.EqualTo(176));
        });

        _release.SetResult();
        var answered = await Task.WhenAll(pending);
        Assert.That(answered.Select(a => a.Status), Is.All.EqualTo(HttpStatusCode.OK));
        Assert.That(_entered, Is.EqualTo(24), "the queued requests ran once places were free");

        // The node is fine afterwards: a client call goes straight through.
        await using var client = await ControlClient.ConnectAsync(_dir, null, ct);
        var echo = await client.CallAsync("echo", new JsonObject { ["after"] = 1 }, ct);
        Assert.That(echo!["after"]!.GetValue<int>(), Is.EqualTo(1));
        Assert.That(server.InFlight, Is.EqualTo(0));
    }

    [Test]
    public async Task Burst_200ParallelClientCalls_WithTheDefaultQueue_AreAllAnswered(CancellationToken ct)
    {
        var options = new ControlOptions { Endpoint = new IPEndPoint(IPAddress.Loopback, 0) };
        await using var server = await StartAsync(options, expectEntered: 16);
        // Ten clients (a batch, status calls, scrapes) of 20 calls each: 16 in flight, the rest queue, none refused.
        var clients = Enumerable.Range(0, 10).Select(_ => ControlClient.Create(server.Address!, server.Token, _dir, options)).ToList();
        try
        {
            var calls = clients.SelectMany(c => Enumerable.Range(0, 20).Select(_ => c.CallAsync("hold", null, ct))).ToList();
            await _allEntered.Task.WaitAsync(ct);
            Assert.That(server.InFlight, Is.EqualTo(16));
            _release.SetResult();
            var results = await Task.WhenAll(calls);
            Assert.That(results.Select(r => r!["held"]!.GetValue<bool>()), Is.All.True);
            Assert.That(results, Has.Length.EqualTo(200));
            Assert.That(server.Refused, Is.EqualTo(0));
            Assert.That(_entered, Is.EqualTo(200));
        }
        finally
        {
            foreach (var c in clients)
            {
                await c.DisposeAsync();
            }
        }
    }

    [Test]
    public async Task Client_RetriesA503_AfterRetryAfter_AndThenSucceeds(CancellationToken ct)
    {
        var options = Small(inFlight: 1, queued: 0);
        await using var server = await StartAsync(options, expectEntered: 1);
        using var http = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { BaseAddress = server.Address };
        var holder = PostAsync(http, server.Token, "hold", ct);
        await _allEntered.Task.WaitAsync(ct);

        var clock = new TimerSignallingClock();
        await using var client = ControlClient.Create(server.Address!, server.Token, _dir, options, clock);
        var call = client.CallAsync("echo", new JsonObject { ["x"] = 7 }, ct);
        await clock.TimerCreated.WaitAsync(ct);   // refused once, now waiting Retry-After on the clock
        Assert.That(server.Refused, Is.EqualTo(1));
        Assert.That(call.IsCompleted, Is.False);

        _release.SetResult();
        Assert.That((await holder).Status, Is.EqualTo(HttpStatusCode.OK));
        clock.Advance(TimeSpan.FromSeconds(1));
        var result = await call;
        Assert.That(result!["x"]!.GetValue<int>(), Is.EqualTo(7));
        Assert.That(client.BusyRetried, Is.EqualTo(1));
        Assert.That(server.Refused, Is.EqualTo(1));
    }

    [Test]
    public async Task Client_StillRefusedAfterItsRetries_GetsATypedBusyError(CancellationToken ct)
    {
        var options = Small(inFlight: 1, queued: 0, retries: 2);
        await using var server = await StartAsync(options, expectEntered: 1);
        using var http = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { BaseAddress = server.Address };
        var holder = PostAsync(http, server.Token, "hold", ct);
        await _allEntered.Task.WaitAsync(ct);

        var clock = new TimerSignallingClock();
        await using var client = ControlClient.Create(server.Address!, server.Token, _dir, options, clock);
        var call = client.CallAsync("echo", null, ct);
        for (var i = 0; i < 2; i++)
        {
            await clock.TimerCreated.WaitAsync(ct);
            clock.Advance(TimeSpan.FromSeconds(1));
        }
        var error = Assert.ThrowsAsync<ControlException>(async () => await call);
        Assert.That(error!.Code, Is.EqualTo(ControlErrorCode.Busy));
        Assert.That(error.Message, Does.Contain("busy").And.Contain("try again"));
        Assert.That(server.Refused, Is.EqualTo(3), "the first call and its two retries");
        Assert.That(client.BusyRetried, Is.EqualTo(2));

        _release.SetResult();
        Assert.That((await holder).Status, Is.EqualTo(HttpStatusCode.OK));
    }

    [Test]
    public async Task Refusals_AreCountedIn_Metrics(CancellationToken ct)
    {
        await using var nodes = new TestNodes(seed: 12);
        var node = await nodes.StartAsync(nodes.Options());
        using var exporter = new MetricsExporter(node);
        await using var server = await StartAsync(Small(inFlight: 1, queued: 0), expectEntered: 1);
        server.MapMetrics(exporter, open: false);
        using var http = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { BaseAddress = server.Address };
        var holder = PostAsync(http, server.Token, "hold", ct);
        await _allEntered.Task.WaitAsync(ct);
        for (var i = 0; i < 3; i++)
        {
            Assert.That((await PostAsync(http, server.Token, "echo", ct)).Status, Is.EqualTo(HttpStatusCode.ServiceUnavailable));
        }
        using var stream = new MemoryStream();
        await exporter.WriteAsync(stream, ct);
        var text = System.Text.Encoding.UTF8.GetString(stream.ToArray());
        Assert.That(text, Does.Contain("potluck_control_refused_total 3"));
        Assert.That(text, Does.Contain("potluck_control_requests_in_flight 1"));
        _release.SetResult();
        Assert.That((await holder).Status, Is.EqualTo(HttpStatusCode.OK));
    }

    /// <summary>A virtual clock that tells the test each time a timer is armed (the client's Retry-After wait).</summary>
    private sealed class TimerSignallingClock : TimeProvider
    {
        private readonly VirtualClock _inner = new();

        public SemaphoreSlim TimerCreated { get; } = new(0);

        public void Advance(TimeSpan by) => _inner.Advance(by);

        public override DateTimeOffset GetUtcNow() => _inner.GetUtcNow();

        public override long GetTimestamp() => _inner.GetTimestamp();

        public override long TimestampFrequency => _inner.TimestampFrequency;

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = _inner.CreateTimer(callback, state, dueTime, period);
            TimerCreated.Release();
            return timer;
        }
    }
}
