using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Potluck.Node.Hosting;
using Potluck.Protocol.Dcutr;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identify;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Ping;

namespace Potluck.Node.Cli;

/// <summary>
/// <c>potluck holepunch</c>: measures DCUtR against a node reached through a relay, as the NAT lab does. Each attempt is a
/// fresh node (new identity, new listen port, so new NAT mappings) that connects to the relay, learns its observed
/// address from identify, dials the target through the relay and waits for the target (the relayed connection's inbound
/// side, which drives DCUtR) to upgrade the connection; a direct connection is then checked with a ping over it.
/// </summary>
internal sealed class HolePunchCommand : PotluckCommand
{
    public HolePunchCommand(CliContext context)
        : base("holepunch", "Measure hole punching (DCUtR) to a node reached through a relay: success, attempts, time to a direct connection.", context)
    {
        Arguments.Add(Address);
        Options.Add(Attempts);
        Options.Add(Parallel);
        Options.Add(Listen);
        Options.Add(Timeout);
        Options.Add(Json);
        Options.Add(LogLevel);
    }

    public Argument<Multiaddr> Address { get; } = CliOptions.Address("the target through its relay: /ip4/<relay ip>/tcp/<port>/p2p/<relay>/p2p-circuit/p2p/<target>");

    public Option<int?> Attempts { get; } = CliOptions.Int("--attempts", "n", "hole punches to try, each from a fresh node (default 50)", 1, 100_000);

    public Option<int?> Parallel { get; } = CliOptions.Int("--parallel", "n", "attempts at once (default 1)", 1, 64);

    public Option<Multiaddr[]> Listen { get; } = CliOptions.Addresses("--listen", "where each fresh node listens (default /ip4/0.0.0.0/tcp/0: a new port each)", needPeerId: false);

    public Option<int?> Timeout { get; } = CliOptions.Int("--timeout", "seconds", "how long an attempt waits for a direct connection (default 30)", 1, 3600);

    public Option<bool> Json { get; } = CliOptions.Flag("--json", "one JSON object per attempt, then a summary object");

    public Option<LogLevel?> LogLevel { get; } = CliOptions.LogLevel(Microsoft.Extensions.Logging.LogLevel.Warning);

    private sealed record Attempt(int Index, bool Relayed, bool Direct, int Rounds, double? MsToDirect, double? DirectPingMs, string? Local, string? Remote, string? Error);

    protected override async Task<int> ExecuteAsync(ParseResult result, CancellationToken ct)
    {
        var target = result.GetValue(Address)!;
        var (relay, targetPeer) = Split(target);
        var attempts = result.GetValue(Attempts) ?? 50;
        var parallel = result.GetValue(Parallel) ?? 1;
        var listen = result.GetValue(Listen) is { Length: > 0 } l ? l : [Multiaddr.Parse("/ip4/0.0.0.0/tcp/0")];
        var timeout = TimeSpan.FromSeconds(result.GetValue(Timeout) ?? 30);
        var json = result.GetValue(Json);
        using var loggers = Commands.CreateLoggers(result.GetValue(LogLevel) ?? Microsoft.Extensions.Logging.LogLevel.Warning);
        using var gate = new SemaphoreSlim(parallel);
        var results = new Attempt[attempts];
        var output = new SemaphoreSlim(1);
        await Task.WhenAll(Enumerable.Range(0, attempts).Select(async i =>
        {
            await gate.WaitAsync(ct);
            try
            {
                results[i] = await AttemptAsync(i + 1, relay, targetPeer, target, listen, timeout, loggers, ct);
            }
            finally
            {
                gate.Release();
            }
            await output.WaitAsync(ct);
            try
            {
                var a = results[i];
                await Out.WriteLineAsync(json
                    ? JsonSerializer.Serialize(a, JsonOptions)
                    : $"attempt {a.Index}: relayed {(a.Relayed ? "yes" : "no")}, direct {(a.Direct ? $"yes after {a.Rounds} round(s), {a.MsToDirect:0} ms, ping {a.DirectPingMs:0.#} ms ({a.Local} -> {a.Remote})" : "no")}{(a.Error is null ? "" : $" ({a.Error})")}");
            }
            finally
            {
                output.Release();
            }
        }));
        var relayed = results.Count(r => r.Relayed);
        var direct = results.Where(r => r.Direct).ToArray();
        var firstRound = direct.Count(r => r.Rounds <= 1);
        var times = direct.Select(r => r.MsToDirect!.Value).Order().ToArray();
        double? median = times.Length > 0 ? times[times.Length / 2] : null;
        if (json)
        {
            await Out.WriteLineAsync(JsonSerializer.Serialize(new
            {
                summary = true,
                attempts,
                relayed,
                direct = direct.Length,
                successRate = relayed == 0 ? 0 : (double)direct.Length / relayed,
                firstRound,
                meanRounds = direct.Length == 0 ? (double?)null : direct.Average(r => Math.Max(1, r.Rounds)),
                medianMsToDirect = median,
            }, JsonOptions));
        }
        else
        {
            await Out.WriteLineAsync($"{attempts} attempts: {relayed} relayed, {direct.Length} direct ({(relayed == 0 ? 0 : 100.0 * direct.Length / relayed):0.#} %), " +
                $"{firstRound} on the first round, median {median:0} ms to direct");
        }
        return relayed == attempts ? 0 : 1;
    }

    private static readonly JsonSerializerOptions JsonOptions = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    private static (Multiaddr Relay, PeerId Target) Split(Multiaddr circuit)
    {
        var components = circuit.Components;
        var at = -1;
        for (var i = 0; i < components.Count; i++)
        {
            if (components[i].Protocol == Multiaddr.P2pCircuit)
            {
                at = i;
                break;
            }
        }
        var relay = at > 0 ? Multiaddr.Parse(string.Concat(components.Take(at).Select(c => c.ToString()))) : null;
        if (relay?.PeerId is null || circuit.PeerId is not { } target || at == components.Count - 1)
        {
            throw new UsageException($"'{circuit}' is not a relayed address: give /ip4/<relay ip>/tcp/<port>/p2p/<relay>/p2p-circuit/p2p/<target>");
        }
        return (relay, target);
    }

    private static async Task<Attempt> AttemptAsync(int index, Multiaddr relay, PeerId target, Multiaddr circuit, IReadOnlyList<Multiaddr> listen,
        TimeSpan timeout, ILoggerFactory loggers, CancellationToken ct)
    {
        var builder = PotluckNode.CreateBuilder();
        builder.Services.AddSingleton(loggers);
        builder.Configure(o => o with
        {
            Listen = listen,
            Protocols = o.Protocols with { Gossipsub = false, Kademlia = false, Perf = false },
        });
        await using var node = builder.Build();
        var relayed = false;
        try
        {
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(ct);
            deadline.CancelAfter(timeout);
            await node.StartAsync(deadline.Token);
            var dcutr = node.Services.GetRequiredService<DcutrService>();
            var rounds = 0;
            dcutr.Synced += (peer, round) =>
            {
                if (peer == target)
                {
                    rounds = round;
                }
            };
            var appeared = new TaskCompletionSource<IConnection>(TaskCreationOptions.RunContinuationsAsynchronously);
            node.Host.Connected += c =>
            {
                if (c.RemotePeer == target && !Libp2pHost.IsRelayed(c))
                {
                    appeared.TrySetResult(c);
                }
            };
            var toRelay = await node.Host.ConnectAsync(relay, deadline.Token);
            // Our observed address (identify from the relay) is what CONNECT tells the target.
            await node.Services.GetRequiredService<IdentifyService>().WhenIdentifiedAsync(toRelay.RemotePeer, deadline.Token);
            var started = Stopwatch.GetTimestamp();
            await node.Host.ConnectAsync(circuit, deadline.Token);
            relayed = true;
            IConnection direct;
            try
            {
                direct = await appeared.Task.WaitAsync(deadline.Token);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                return new Attempt(index, true, false, rounds, null, null, null, null, $"no direct connection within {timeout.TotalSeconds:0} s after {rounds} round(s)");
            }
            var ms = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
            var ping = node.Services.GetRequiredService<PingService>();
            var rtt = (await ping.PingAsync(target, 1, deadline.Token))[0];
            return new Attempt(index, true, true, rounds, ms, rtt.TotalMilliseconds, direct.LocalAddress.ToString(), direct.RemoteAddress.ToString(), null);
        }
        catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            return new Attempt(index, relayed, false, 0, null, null, null, null, e.Message);
        }
    }
}
