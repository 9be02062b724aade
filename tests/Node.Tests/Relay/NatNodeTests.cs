using System.Diagnostics.Metrics;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Potluck.Node.Compute;
using Potluck.Node.Control;
using Potluck.Node.Hosting;
using Potluck.Node.Tests.Compute;
using Potluck.Protocol.AutoNat;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Relay;
using Potluck.Protocol.Runtime;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Requesting;

namespace Potluck.Node.Tests.Relay;

/// <summary>
/// AutoNAT v2 and automatic relay as the composition root wires them, on the simulated network and virtual time: a
/// public relay (also the bootstrap node), a second public node, a provider behind a NAT that refuses inbound dials
/// (<see cref="Protocol.Transport.Memory.SimulatedNetwork.BlockInbound"/>) and a requester that does not listen.
/// </summary>
public class NatNodeTests
{
    private static PotluckOptions Nat(PotluckOptions o) => o with
    {
        // The simulated network's addresses count as private: tested here as a lab would.
        AutoNat = o.AutoNat with { AllowPrivateAddresses = true },
    };

    private static PotluckOptions Compute(PotluckOptions o, bool provide) => o with
    {
        Compute = o.Compute with
        {
            Enabled = true,
            Provide = provide,
            Provider = ComputeCluster.ProviderOptions(price: 10),
            Sandbox = new Potluck.Scheduler.Sandbox.SandboxOptions { MaxMemoryBytes = 128L << 20 },
        },
    };

    private static PotluckOptions FollowReachability(PotluckOptions o) => o with { Kademlia = o.Kademlia with { FollowReachability = true } };

    [Test]
    public void NodeFoundPrivate_WithFollowReachability_BecomesADhtClient_AndADhtServerAgainOnceFoundPublic() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var nodes = new TestNodes(d, seed: 37);
        var relay = await nodes.Builder(nodes.Options()).Configure(o => FollowReachability(Nat(o))).StartAsync();
        await using var relayOwned = relay;
        var other = await nodes.Builder(nodes.Options() with { Bootstrap = [relay.FullAddresses[0]] }).Configure(o => FollowReachability(Nat(o))).StartAsync();
        await using var otherOwned = other;
        var home = await nodes.Builder(nodes.Options() with { Bootstrap = [relay.FullAddresses[0]] }).Configure(o => FollowReachability(Nat(o))).StartAsync();
        await using var homeOwned = home;
        var bound = home.Host.BoundAddresses[0];
        nodes.Network.BlockInbound(bound);
        await home.Host.ConnectAsync(other.FullAddresses[0], ct);
        Assert.That(home.Dht.Mode, Is.EqualTo(Potluck.Protocol.Kademlia.KademliaMode.Server), "unknown at first: it keeps server mode");

        await Task.Delay(TimeSpan.FromMinutes(3), d.Clock);

        Assert.That(home.Services.GetRequiredService<AutoNatService>().Reachability, Is.EqualTo(Reachability.Private));
        Assert.That(home.Dht.Mode, Is.EqualTo(Potluck.Protocol.Kademlia.KademliaMode.Client), "found private: a DHT client");
        Assert.That(home.Host.Protocols, Does.Not.Contain(home.Dht.ProtocolId));
        Assert.That(relay.Dht.RoutingTablePeers(), Does.Not.Contain(home.PeerId), "the relay dropped it on its identify push");
        Assert.That(other.Dht.RoutingTablePeers(), Does.Not.Contain(home.PeerId));
        Assert.That(home.Dht.RoutingTablePeers(), Is.SupersetOf(new[] { relay.PeerId, other.PeerId }), "it keeps its own table and looks up through it");
        Assert.That((relay.Dht.Mode, other.Dht.Mode), Is.EqualTo((Potluck.Protocol.Kademlia.KademliaMode.Server, Potluck.Protocol.Kademlia.KademliaMode.Server)),
            "public nodes stay servers");

        // The NAT goes (a port forward is set up): the next re-test finds it public, and it serves the DHT again.
        nodes.Network.AllowInbound(bound);
        await Task.Delay(TimeSpan.FromMinutes(40), d.Clock);

        Assert.That(home.Services.GetRequiredService<AutoNatService>().Reachability, Is.EqualTo(Reachability.Public));
        Assert.That(home.Dht.Mode, Is.EqualTo(Potluck.Protocol.Kademlia.KademliaMode.Server));
        Assert.That(relay.Dht.RoutingTablePeers(), Does.Contain(home.PeerId), "the relay lists it again");
    });

    [Test]
    public void ProviderBehindNat_IsFoundPrivate_ReservesOnThePublicRelay_AndALeaseCompletesOverTheRelay() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var nodes = new TestNodes(d, seed: 31);
        var relay = await nodes.Builder(nodes.Options() with { DataDir = nodes.NewDataDir() }).Configure(Nat).StartAsync();
        await using var relayOwned = relay;
        var other = await nodes.Builder(nodes.Options() with { Bootstrap = [relay.FullAddresses[0]] }).Configure(Nat).StartAsync();
        await using var otherOwned = other;

        var providerOptions = nodes.Options() with { Bootstrap = [relay.FullAddresses[0]], DataDir = nodes.NewDataDir() };
        var provider = await nodes.Builder(providerOptions).Configure(o => Compute(Nat(o), provide: true)).StartAsync();
        await using var providerOwned = provider;
        var providerBound = provider.Host.BoundAddresses[0];
        nodes.Network.BlockInbound(providerBound);
        var started = d.Clock.GetUtcNow();
        TimeSpan? privateAfter = null, reservedAfter = null;
        provider.Services.GetRequiredService<AutoNatService>().Changed += () =>
            privateAfter ??= provider.Services.GetRequiredService<AutoNatService>().Reachability == Reachability.Private ? d.Clock.GetUtcNow() - started : null;
        provider.Services.GetRequiredService<CircuitTransport>().ReservationsChanged += () => reservedAfter ??= d.Clock.GetUtcNow() - started;
        await provider.Host.ConnectAsync(other.FullAddresses[0], ct);

        var requesterOptions = nodes.Options() with { Listen = [], Bootstrap = [relay.FullAddresses[0]], DataDir = nodes.NewDataDir() };
        var requester = await nodes.Builder(requesterOptions).Configure(o => Compute(Nat(o), provide: false)).StartAsync();
        await using var requesterOwned = requester;

        await Task.Delay(TimeSpan.FromMinutes(3), d.Clock);

        var relayNat = relay.Services.GetRequiredService<AutoNatService>();
        Assert.That(relayNat.Reachability, Is.EqualTo(Reachability.Public), "the relay's address was dialled back by at least two servers");
        Assert.That(relay.Services.GetRequiredService<RelayService>().IsServing, Is.True, "a public node offers hop by itself");
        Assert.That(relay.Host.Protocols, Does.Contain(RelayService.HopProtocolId));

        var providerNat = provider.Services.GetRequiredService<AutoNatService>();
        Assert.That(providerNat.Reachability, Is.EqualTo(Reachability.Private));
        Assert.That(providerNat.Addresses.Single(a => a.Address == providerBound).Unreachable, Is.GreaterThanOrEqualTo(2));
        Assert.That(provider.Services.GetRequiredService<RelayService>().IsServing, Is.False, "an unreachable node does not offer hop");
        var reservations = provider.Services.GetRequiredService<CircuitTransport>().Reservations;
        Assert.That(reservations.Select(r => r.Relay), Does.Contain(relay.PeerId), "it reserved on its bootstrap relay");
        Assert.That(provider.Host.ListenAddresses, Is.Not.Empty);
        Assert.That(provider.Host.ListenAddresses, Has.All.Matches<Multiaddr>(a => a.Find(Multiaddr.P2pCircuit) is not null),
            "it advertises only its relayed addresses (the unreachable one is dropped)");
        Assert.That(provider.Host.ListenAddresses.Any(a => a.ToString() == "/p2p-circuit"), Is.False, "never a bare /p2p-circuit");
        Assert.That(relay.Host.Peers.GetAddresses(provider.PeerId).Any(a => a.Find(Multiaddr.P2pCircuit) is not null), Is.True,
            "identify (push) told the relay about the relayed address");

        var status = NodeControl.Status(provider, d.Clock.GetUtcNow());
        Assert.That(status["nat"]!["reachability"]!.GetValue<string>(), Is.EqualTo("private"));
        Assert.That(NodeControl.Status(relay, d.Clock.GetUtcNow())["nat"]!["reachability"]!.GetValue<string>(), Is.EqualTo("public"));

        // The requester learns the provider's relayed address from its advertisement and runs a task on it: the module
        // (164 KiB) is larger than a relayed connection's default 128 KiB, but the relay gives lease providers more.
        await requester.Compute!.Client.WaitForProvidersAsync(1, ct);
        var module = ComputeCluster.Sample("hashchain");
        var result = await requester.Compute.SubmitAsync(new TaskSubmission
        {
            Module = module,
            Input = "relayed"u8.ToArray(),
            Args = ["100"],
            Fuel = 200_000_000,
            MemoryBytes = 32L << 20,
            MaxPricePerMegaFuel = 50,
        }, ct);
        Assert.That(result.Status, Is.EqualTo(ExecutionStatus.Success), result.Error);
        Assert.That(result.Provider, Is.EqualTo(provider.PeerId));
        Assert.That(Encoding.ASCII.GetString(result.Output.Span), Is.EqualTo(ComputeCluster.HashChain("relayed"u8.ToArray(), 100)));
        var toProvider = requester.Host.Connections.Where(c => c.RemotePeer == provider.PeerId && !c.IsClosed).ToArray();
        Assert.That(toProvider, Is.Not.Empty);
        Assert.That(toProvider, Has.All.Matches<Protocol.Host.IConnection>(c => c.RemoteAddress.Find(Multiaddr.P2pCircuit) is not null),
            "no direct connection could be made: the lease ran over the relay");
        var hop = relay.Services.GetRequiredService<RelayService>();
        Assert.That(hop.BytesRelayed, Is.GreaterThan(module.Length), "the module went through the relay, past the default 128 KiB limit");
        Assert.That(hop.CircuitsCutAtLimit, Is.Zero);
        TestContext.Out.WriteLine($"provider found private after {privateAfter?.TotalSeconds} s, reserved after {reservedAfter?.TotalSeconds} s (virtual); " +
            $"relay carried {hop.BytesRelayed} bytes for the lease ({module.Length}-byte module), {hop.CircuitsOpened} circuits");

        // The relay's counters are on its meter.
        var measured = new Dictionary<string, long>();
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter == relay.Host.Instruments.Meter && instrument.Name.StartsWith("potluck.relay.", StringComparison.Ordinal))
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) => measured[instrument.Name + TagText(tags)] = value);
        listener.SetMeasurementEventCallback<int>((instrument, value, tags, _) => measured[instrument.Name + TagText(tags)] = value);
        listener.Start();
        listener.RecordObservableInstruments();
        Assert.That(measured["potluck.relay.reservations"], Is.GreaterThanOrEqualTo(1));
        Assert.That(measured["potluck.relay.circuits.opened"], Is.GreaterThanOrEqualTo(1));
        Assert.That(measured["potluck.relay.bytes"], Is.EqualTo(hop.BytesRelayed));
        Assert.That(measured.Keys, Does.Contain("potluck.relay.refused{what=reservation}"));

        // Refresh: past the relay's 1 h TTL the reservation is still held, renewed before it ran out.
        var circuit = provider.Services.GetRequiredService<CircuitTransport>();
        var firstExpiry = circuit.Reservations.Single(r => r.Relay == relay.PeerId).Expires;
        await Task.Delay(TimeSpan.FromMinutes(70), d.Clock);
        Assert.That(circuit.Reservations.Single(r => r.Relay == relay.PeerId).Expires, Is.GreaterThan(firstExpiry));
        Assert.That(hop.ReservationCount, Is.GreaterThanOrEqualTo(1), "the relay still holds it");

        // Losing a relay: the provider gives its reservation up and stops advertising it; the other public node,
        // which serves hop by itself, carries it instead.
        Assert.That(other.Services.GetRequiredService<RelayService>().IsServing, Is.True);
        nodes.Network.Partition(providerBound, relay.Host.BoundAddresses[0]);
        await Task.Delay(TimeSpan.FromMinutes(2), d.Clock);
        Assert.That(circuit.Reservations.Select(r => r.Relay), Does.Not.Contain(relay.PeerId));
        Assert.That(circuit.Reservations.Select(r => r.Relay), Does.Contain(other.PeerId));
        Assert.That(provider.Host.ListenAddresses.Any(a => a.ToString().Contains(relay.PeerId.ToString(), StringComparison.Ordinal)), Is.False);
        Assert.That(provider.Host.ListenAddresses.Any(a => a.ToString().Contains(other.PeerId.ToString(), StringComparison.Ordinal)), Is.True);
    });

    [Test, Category("Adversarial")]
    public void PreferredRelayThatStallsOrRefuses_IsBackedOffFrom_AndAnHonestRelayIsUsed() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None;
        await using var nodes = new TestNodes(d, seed: 37);
        // The bootstrap node answers hop requests by reading them and never answering (the first minute), then by
        // refusing; the other public node is an honest relay.
        var bad = await nodes.Builder(nodes.Options()).Configure(o => Nat(o) with { Relay = o.Relay with { Hop = true } }).StartAsync();
        await using var badOwned = bad;
        var attempts = 0;
        bad.Host.SetStreamHandler(RelayService.HopProtocolId, async (stream, token) =>
        {
            attempts++;
            await Potluck.Protocol.Framing.LengthPrefixed.ReadAsync(stream.Input, 4096, "test", token);
            if (attempts == 1)
            {
                await Task.Delay(TimeSpan.FromMinutes(5), d.Clock, token); // stall
            }
            var refusal = new Potluck.Protocol.Relay.Pb.HopMessage
            {
                Type = Potluck.Protocol.Relay.Pb.HopMessage.Types.Type.Status,
                Status = Potluck.Protocol.Relay.Pb.Status.ReservationRefused,
            };
            await Potluck.Protocol.Framing.LengthPrefixed.WriteAsync(stream.Output, Google.Protobuf.MessageExtensions.ToByteArray(refusal), token);
        });
        var good = await nodes.Builder(nodes.Options() with { Bootstrap = [bad.FullAddresses[0]] })
            .Configure(o => Nat(o) with { Relay = o.Relay with { Hop = true } }).StartAsync();
        await using var goodOwned = good;
        var provider = await nodes.Builder(nodes.Options() with { Bootstrap = [bad.FullAddresses[0]] }).Configure(Nat).StartAsync();
        await using var providerOwned = provider;
        nodes.Network.BlockInbound(provider.Host.BoundAddresses[0]);
        await provider.Host.ConnectAsync(good.FullAddresses[0], ct);

        await Task.Delay(TimeSpan.FromMinutes(10), d.Clock);
        Assert.That(provider.Services.GetRequiredService<AutoNatService>().Reachability, Is.EqualTo(Reachability.Private));
        var relays = provider.Services.GetRequiredService<CircuitTransport>().Reservations.Select(r => r.Relay).ToArray();
        Assert.That(relays, Does.Contain(good.PeerId), "the honest relay carries the reservation");
        Assert.That(relays, Does.Not.Contain(bad.PeerId));
        Assert.That(provider.Host.ListenAddresses.Any(a => a.ToString().Contains(good.PeerId.ToString(), StringComparison.Ordinal)), Is.True);
        Assert.That(attempts, Is.InRange(1, 11), "the stalling, then refusing relay is tried at most once a minute");
        TestContext.Out.WriteLine($"bad relay asked {attempts} times in 10 virtual minutes");
    });

    private static string TagText(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        if (tags.Length == 0)
        {
            return "";
        }
        var parts = new List<string>();
        foreach (var t in tags)
        {
            parts.Add($"{t.Key}={t.Value}");
        }
        return "{" + string.Join(",", parts) + "}";
    }

    [Test]
    public void AutoNatAndRelayOptions_OutOfRange_AreReportedWithTheirKeys()
    {
        var problems = PotluckOptionsValidator.Validate(new PotluckOptions
        {
            AutoNat = new AutoNatOptions { DialDataBytes = 1000, Confirmations = 0 },
            Relay = new RelayOptions { MaxAutoReservations = 0, LeaseConnectionData = 0 },
        });
        Assert.That(problems, Has.Some.StartsWith("'autoNat:dialDataBytes' is 1000"));
        Assert.That(problems, Has.Some.StartsWith("'autoNat:confirmations' is 0"));
        Assert.That(problems, Has.Some.StartsWith("'relay:maxAutoReservations' is 0"));
        Assert.That(problems, Has.Some.StartsWith("'relay:leaseConnectionData' is 0"));
    }
}
