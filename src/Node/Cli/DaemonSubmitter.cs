using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Potluck.Node.Control;
using Potluck.Scheduler.Requesting;

namespace Potluck.Node.Cli;

/// <summary>
/// `potluck submit` through the node already running on a data directory (<see cref="SubmitControl"/>): no second node,
/// no second identity or ledger, no lock conflict. Each module and input goes up once as a blob (by SHA-256: a batch
/// sends its module once), then <c>submit</c> runs the task there and returns its result.
/// </summary>
internal sealed class DaemonSubmitter(ControlClient client) : IAsyncDisposable
{
    private readonly HashSet<string> _sent = [];
    private readonly Lock _gate = new();

    public ControlClient Client => client;

    /// <summary>The node running on <paramref name="dataDir"/> if one answers there; null otherwise.</summary>
    public static async Task<DaemonSubmitter?> TryConnectAsync(string dataDir, CancellationToken ct)
    {
        ControlClient control;
        try
        {
            control = await ControlClient.ConnectAsync(dataDir, null, ct);
        }
        catch (IOException)
        {
            return null; // no control.json or token: no node runs there
        }
        try
        {
            var status = await control.CallAsync(NodeControl.StatusMethod, null, ct);
            return new DaemonSubmitter(control) { PeerId = status?["peer_id"]?.GetValue<string>() ?? "?" };
        }
        catch (Exception e) when (e is IOException or ControlException or HttpRequestException)
        {
            // control.json left by a node that is gone, or a node that does not answer as one: run a node of our own.
            await control.DisposeAsync();
            return null;
        }
    }

    public string PeerId { get; private init; } = "?";

    public async Task<SubmissionResult> SubmitAsync(TaskSubmission s, CancellationToken ct)
    {
        for (var attempt = 0; ; attempt++)
        {
            var module = await SendAsync(s.Module, force: attempt > 0, ct);
            var input = await SendAsync(s.Input, force: attempt > 0, ct);
            var parameters = new JsonObject
            {
                ["module"] = module,
                ["input"] = input,
                ["args"] = new JsonArray([.. s.Args.Select(a => (JsonNode)a)]),
                ["fuel"] = s.Fuel,
                ["max_price"] = s.MaxPricePerMegaFuel,
                ["verify_rate"] = s.VerifyRate,
                ["replicas"] = s.Replicas,
            };
            try
            {
                return SubmitControl.FromJson(await client.CallAsync(SubmitControl.Method, parameters, ct));
            }
            catch (ControlException e) when (e.Code == ControlErrorCode.BadRequest && e.Message.StartsWith(SubmitControl.MissingBlob, StringComparison.Ordinal) && attempt < 2)
            {
                // The node let a blob go to make room for others: send it again.
            }
        }
    }

    private async Task<string> SendAsync(ReadOnlyMemory<byte> bytes, bool force, CancellationToken ct)
    {
        var hash = Convert.ToHexStringLower(SHA256.HashData(bytes.Span));
        lock (_gate)
        {
            if (!force && _sent.Contains(hash))
            {
                return hash;
            }
        }
        var stored = await client.PutBlobAsync(bytes, ct);
        if (stored != hash)
        {
            throw new IOException($"the node stored the blob as {stored}, not {hash}");
        }
        lock (_gate)
        {
            _sent.Add(hash);
        }
        return hash;
    }

    public ValueTask DisposeAsync() => client.DisposeAsync();
}
