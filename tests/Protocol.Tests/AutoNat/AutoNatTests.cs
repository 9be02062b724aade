using Google.Protobuf;
using Potluck.Protocol.AutoNat;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identify;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Tests.Host;
using AutoNatPb = Potluck.Protocol.AutoNat.Pb;

namespace Potluck.Protocol.Tests.AutoNat;

/// <summary>
/// AutoNAT v2 on the simulated network under the virtual-time driver. A node "behind NAT" is one whose endpoint
/// refuses inbound dials (<see cref="Transport.Memory.SimulatedNetwork.BlockInbound"/>): it dials out from its listen
/// address, so that is what others observe, but nobody can dial it.
/// </summary>
public class AutoNatTests
{
    private sealed record Node(Libp2pHost Host, IdentifyService Identify, AutoNatService AutoNat)
    {
        public Multiaddr Address => Host.BoundAddresses[0].WithPeer(Host.PeerId);

        public Multiaddr Bound => Host.BoundAddresses[0];
    }

    private static async Task<Node> StartAsync(TestHosts hosts, int index, AutoNatOptions? options = null)
    {
        var runtime = hosts.NextRuntime();
        var host = Libp2pHost.Create(PrivateKey.FromRandom(new Random(200 + index)), [hosts.Network.CreateTransport()],
            new Libp2pHostSettings(), runtime, hosts.Loggers);
        hosts.Own(host);
        var identify = hosts.Own(new IdentifyService(host, new IdentifyOptions(), runtime, hosts.Loggers));
        var autonat = hosts.Own(new AutoNatService(host, (options ?? new AutoNatOptions()) with { AllowPrivateAddresses = true }, runtime, hosts.Loggers, identify));
        await host.StartAsync([Multiaddr.Parse("/memory/0")], CancellationToken.None);
        autonat.Start();
        return new Node(host, identify, autonat);
    }

    [Test]
    public void ReachableAndUnreachableNodes_GetTheRightVerdicts_FromTwoServers()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            var s1 = await StartAsync(hosts, 1);
            var s2 = await StartAsync(hosts, 2);
            var open = await StartAsync(hosts, 3);
            var natted = await StartAsync(hosts, 4);
            hosts.Network.BlockInbound(natted.Bound);
            var changes = 0;
            natted.AutoNat.Changed += () => changes++;

            foreach (var client in new[] { open, natted })
            {
                await client.Host.ConnectAsync(s1.Address, CancellationToken.None);
                await client.Host.ConnectAsync(s2.Address, CancellationToken.None);
            }
            await Task.Delay(TimeSpan.FromSeconds(40), d.Clock);

            Assert.That(open.AutoNat.Reachability, Is.EqualTo(Reachability.Public));
            var openRow = open.AutoNat.Addresses.Single(a => a.Address == open.Bound);
            Assert.That(openRow.Status, Is.EqualTo(Reachability.Public));
            Assert.That(openRow.Reachable, Is.EqualTo(2), "confirmed by both servers");

            Assert.That(natted.AutoNat.Reachability, Is.EqualTo(Reachability.Private));
            var nattedRow = natted.AutoNat.Addresses.Single(a => a.Address == natted.Bound);
            Assert.That(nattedRow.Status, Is.EqualTo(Reachability.Private));
            Assert.That(nattedRow.Unreachable, Is.EqualTo(2));
            Assert.That(natted.AutoNat.Rewrite(natted.Host.BoundAddresses), Is.Empty, "an address found unreachable is not advertised");
            Assert.That(changes, Is.GreaterThan(0));

            // The dial-back connections were closed after use; the servers keep one connection per client.
            Assert.That(s1.AutoNat.DialBacks, Is.EqualTo(2));
            Assert.That(s1.Host.Connections.Count(c => c.RemotePeer == open.Host.PeerId), Is.EqualTo(1));
            Assert.That(s1.AutoNat.DialDataReceived, Is.Zero, "each client asked about its own address: no dial data");
        });
    }

    [Test]
    public void OneServer_IsNotEnough_ToDecide()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            var s1 = await StartAsync(hosts, 1);
            var client = await StartAsync(hosts, 3);
            await client.Host.ConnectAsync(s1.Address, CancellationToken.None);
            await Task.Delay(TimeSpan.FromMinutes(2), d.Clock);
            var row = client.AutoNat.Addresses.Single(a => a.Address == client.Bound);
            Assert.That(row.Reachable, Is.EqualTo(1));
            Assert.That(row.Status, Is.EqualTo(Reachability.Unknown));
            Assert.That(client.AutoNat.Reachability, Is.EqualTo(Reachability.Unknown));
        });
    }

    [Test, Category("Adversarial")]
    public void Server_IsNotUsableForAmplification_WithoutDialData()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            var server = await StartAsync(hosts, 1);
            var attacker = await StartAsync(hosts, 2, new AutoNatOptions { Client = false, MaxDialDataToSend = 0 });
            var victim = await StartAsync(hosts, 3, new AutoNatOptions { Client = false });
            await attacker.Host.ConnectAsync(server.Address, CancellationToken.None);
            var victimInbound = 0;
            victim.Host.Connected += c => victimInbound += c.Direction == Direction.Inbound ? 1 : 0;

            // The attacker asks the server to dial the victim and refuses to pay: the server never dials.
            for (var i = 0; i < 5; i++)
            {
                await AsyncAssert.ThrowsAsync<ProtocolViolationException>(() => attacker.AutoNat.ProbeAsync(server.Host.PeerId, [victim.Bound], CancellationToken.None));
            }
            await Task.Delay(TimeSpan.FromSeconds(5), d.Clock);
            Assert.That(victimInbound, Is.Zero, "the victim saw no connection from the server");
            Assert.That(server.AutoNat.DialBacks, Is.Zero);

            // One that pays gets its dial, after sending at least 30,000 bytes: more than the handshake costs the victim.
            var paying = await StartAsync(hosts, 4, new AutoNatOptions { Client = false });
            await paying.Host.ConnectAsync(server.Address, CancellationToken.None);
            var probe = await paying.AutoNat.ProbeAsync(server.Host.PeerId, [victim.Bound], CancellationToken.None);
            Assert.That(probe.Status, Is.EqualTo(AutoNatResponseStatus.Ok));
            Assert.That(probe.DialStatus, Is.EqualTo(AutoNatDialStatus.DialBackError), "the victim does not speak dial-back");
            Assert.That(probe.NonceReceived, Is.False, "the victim does not know the payer's nonce");
            Assert.That(probe.Reachable, Is.Null, "and so the payer learns nothing it can count");
            Assert.That(server.AutoNat.DialDataReceived, Is.GreaterThanOrEqualTo(30_000));
            Assert.That(server.AutoNat.DialBacks, Is.EqualTo(1));
        });
    }

    [Test, Category("Adversarial")]
    public void Server_RateLimitsRequests_PerPeerAndAfterAMinuteServesAgain()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            var server = await StartAsync(hosts, 1, new AutoNatOptions { Client = false, ServerRequestsPerPeerPerMinute = 3 });
            var client = await StartAsync(hosts, 2, new AutoNatOptions { Client = false });
            await client.Host.ConnectAsync(server.Address, CancellationToken.None);
            var statuses = new List<AutoNatResponseStatus>();
            for (var i = 0; i < 5; i++)
            {
                statuses.Add((await client.AutoNat.ProbeAsync(server.Host.PeerId, [client.Bound], CancellationToken.None)).Status);
            }
            Assert.That(statuses, Is.EqualTo(new[] { AutoNatResponseStatus.Ok, AutoNatResponseStatus.Ok, AutoNatResponseStatus.Ok,
                AutoNatResponseStatus.RequestRejected, AutoNatResponseStatus.RequestRejected }));
            Assert.That(server.AutoNat.DialBacks, Is.EqualTo(3));
            Assert.That(server.AutoNat.RequestsRejected, Is.EqualTo(2));
            await Task.Delay(TimeSpan.FromMinutes(1), d.Clock);
            Assert.That((await client.AutoNat.ProbeAsync(server.Host.PeerId, [client.Bound], CancellationToken.None)).Status,
                Is.EqualTo(AutoNatResponseStatus.Ok));
        });
    }

    [Test, Category("Adversarial")]
    public void Server_ResetsOversizedRequests_AndOversizedDialData_AndKeepsServing()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            var server = await StartAsync(hosts, 1, new AutoNatOptions { Client = false });
            var client = await StartAsync(hosts, 2);
            var other = await StartAsync(hosts, 3, new AutoNatOptions { Client = false });
            await client.Host.ConnectAsync(server.Address, CancellationToken.None);
            await Task.Delay(TimeSpan.FromSeconds(5), d.Clock); // the client's own first probe, on identify
            var dialBacks = server.AutoNat.DialBacks;

            // 17 addresses (over 16): reset without a dial.
            var request = new AutoNatPb.DialRequest { Nonce = 1 };
            for (var i = 0; i < 17; i++)
            {
                request.Addrs.Add(ByteString.CopyFrom(Multiaddr.Parse($"/memory/{9000 + i}").ToBytes()));
            }
            Assert.That(await SendRawAsync(client, server, new AutoNatPb.Message { DialRequest = request }), Is.Null);

            // Dial data in a chunk over 4,096 bytes: reset, no dial.
            var ask = new AutoNatPb.DialRequest { Nonce = 2 };
            ask.Addrs.Add(ByteString.CopyFrom(other.Bound.ToBytes()));
            var answer = await SendRawAsync(client, server, new AutoNatPb.Message { DialRequest = ask },
                new AutoNatPb.Message { DialDataResponse = new AutoNatPb.DialDataResponse { Data = ByteString.CopyFrom(new byte[6000]) } });
            Assert.That(answer?.MsgCase, Is.EqualTo(AutoNatPb.Message.MsgOneofCase.DialDataRequest), "the first answer asks for dial data");
            Assert.That(server.AutoNat.DialBacks, Is.EqualTo(dialBacks), "no dial for either");

            // A 1 GiB length prefix: reset, never allocated.
            await using (var raw = await client.Host.NewStreamAsync(server.Host.PeerId, [AutoNatService.DialRequestProtocolId], CancellationToken.None))
            {
                await raw.Output.WriteAsync(new byte[] { 0x80, 0x80, 0x80, 0x80, 0x04 }, CancellationToken.None);
                var ended = false;
                try
                {
                    ended = (await raw.Input.ReadAsync(CancellationToken.None)).IsCompleted;
                }
                catch (StreamResetException)
                {
                    ended = true;
                }
                Assert.That(ended, Is.True, "the stream was reset");
            }

            var probe = await client.AutoNat.ProbeAsync(server.Host.PeerId, [client.Bound], CancellationToken.None);
            Assert.That(probe.Reachable, Is.True, "the server still serves honest requests");
        });
    }

    [Test, Category("Adversarial")]
    public void LyingServer_ThatClaimsOkWithoutDialling_IsNotCounted()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            var liars = new List<Node>();
            for (var i = 1; i <= 3; i++)
            {
                var liar = await StartAsync(hosts, i, new AutoNatOptions { Client = false });
                // Replace the honest handler by one that answers "dialled, OK" without dialling.
                liar.Host.SetStreamHandler(AutoNatService.DialRequestProtocolId, async (stream, ct) =>
                {
                    await LengthPrefixed.ReadAsync(stream.Input, 8192, "test", ct);
                    await LengthPrefixed.WriteAsync(stream.Output, new AutoNatPb.Message
                    {
                        DialResponse = new AutoNatPb.DialResponse
                        {
                            Status = AutoNatPb.DialResponse.Types.ResponseStatus.Ok,
                            DialStatus = AutoNatPb.DialStatus.Ok,
                        },
                    }.ToByteArray(), ct);
                    await stream.Output.CompleteAsync();
                });
                liars.Add(liar);
            }
            var natted = await StartAsync(hosts, 4);
            hosts.Network.BlockInbound(natted.Bound);
            foreach (var liar in liars)
            {
                await natted.Host.ConnectAsync(liar.Address, CancellationToken.None);
            }
            await Task.Delay(TimeSpan.FromMinutes(2), d.Clock);
            var row = natted.AutoNat.Addresses.Single(a => a.Address == natted.Bound);
            Assert.That(row.Reachable, Is.Zero, "an OK without our nonce counts for nothing");
            Assert.That(natted.AutoNat.Reachability, Is.Not.EqualTo(Reachability.Public));
        });
    }

    [Test, Category("Adversarial")]
    public void GreedyServer_AskingForDialDataTwice_GetsItOnce_AndTheProbeFails()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            var greedy = await StartAsync(hosts, 1, new AutoNatOptions { Client = false });
            long received = 0;
            greedy.Host.SetStreamHandler(AutoNatService.DialRequestProtocolId, async (stream, ct) =>
            {
                await LengthPrefixed.ReadAsync(stream.Input, 8192, "test", ct);
                for (var round = 0; round < 3; round++)
                {
                    await LengthPrefixed.WriteAsync(stream.Output, new AutoNatPb.Message
                    {
                        DialDataRequest = new AutoNatPb.DialDataRequest { AddrIdx = 0, NumBytes = 100_000 },
                    }.ToByteArray(), ct);
                    while (received < (round + 1) * 100_000L)
                    {
                        var bytes = await LengthPrefixed.ReadAsync(stream.Input, 8192, "test", ct);
                        if (bytes is null)
                        {
                            return;
                        }
                        received += AutoNatPb.Message.Parser.ParseFrom(bytes).DialDataResponse.Data.Length;
                    }
                }
            });
            var client = await StartAsync(hosts, 2, new AutoNatOptions { Client = false });
            await client.Host.ConnectAsync(greedy.Address, CancellationToken.None);
            await AsyncAssert.ThrowsAsync<ProtocolViolationException>(() => client.AutoNat.ProbeAsync(greedy.Host.PeerId, [client.Bound], CancellationToken.None));
            await Task.Delay(TimeSpan.FromSeconds(1), d.Clock);
            Assert.That(received, Is.LessThanOrEqualTo(100_000 + 4096), "the client paid once, at most its 100,000-byte cap");
        });
    }

    [Test]
    public void ObservedAddress_IsTestedOnlyOnceEnoughPeersReportIt()
    {
        var tracker = new ReachabilityTracker(new AutoNatOptions { ObservedAddressThreshold = 2 });
        var a = Multiaddr.Parse("/ip4/203.0.113.9/tcp/4100");
        var now = DateTimeOffset.UnixEpoch;
        tracker.AddObserved(PeerId(1), a, now);
        tracker.AddObserved(PeerId(1), a, now);
        Assert.That(tracker.ActivatedObserved, Is.Empty, "one peer twice is one report");
        tracker.AddObserved(PeerId(2), a, now);
        Assert.That(tracker.ActivatedObserved, Is.EqualTo(new[] { a }));
        Assert.That(ReachabilityTracker.IsTestable(Multiaddr.Parse("/ip4/192.168.1.4/tcp/4100"), allowPrivate: false), Is.False);
        Assert.That(ReachabilityTracker.IsTestable(Multiaddr.Parse("/ip4/127.0.0.1/tcp/4100"), allowPrivate: false), Is.False);
        Assert.That(ReachabilityTracker.IsTestable(a, allowPrivate: false), Is.True);
        Assert.That(ReachabilityTracker.IsTestable(Multiaddr.Parse("/memory/7"), allowPrivate: false), Is.False, "the simulated network counts as private");
        Assert.That(ReachabilityTracker.IsTestable(Multiaddr.Parse("/ip4/203.0.113.9/tcp/4100/p2p-circuit"), allowPrivate: true), Is.False);
    }

    [Test]
    public void Tracker_NeedsAMajorityOfDistinctServers()
    {
        var tracker = new ReachabilityTracker(new AutoNatOptions { Confirmations = 2, ResultsPerAddress = 5 });
        var a = Multiaddr.Parse("/ip4/203.0.113.9/tcp/4100");
        var now = DateTimeOffset.UnixEpoch;
        tracker.Record(a, PeerId(1), true, now);
        tracker.Record(a, PeerId(1), true, now);
        Assert.That(tracker.StatusOf(a), Is.EqualTo(Reachability.Unknown), "the same server twice is one vote");
        tracker.Record(a, PeerId(2), true, now);
        Assert.That(tracker.StatusOf(a), Is.EqualTo(Reachability.Public));
        tracker.Record(a, PeerId(3), false, now);
        tracker.Record(a, PeerId(4), false, now);
        Assert.That(tracker.StatusOf(a), Is.EqualTo(Reachability.Unknown), "two against two decides nothing");
        tracker.Record(a, PeerId(5), false, now);
        Assert.That(tracker.StatusOf(a), Is.EqualTo(Reachability.Private));
    }

    private static PeerId PeerId(int i) => PrivateKey.FromRandom(new Random(i)).PeerId;

    /// <summary>Sends raw messages on a dial-request stream; the first answer, or null when the stream was reset or closed.</summary>
    private static async Task<AutoNatPb.Message?> SendRawAsync(Node from, Node to, params AutoNatPb.Message[] messages)
    {
        await using var stream = await from.Host.NewStreamAsync(to.Host.PeerId, [AutoNatService.DialRequestProtocolId], CancellationToken.None);
        AutoNatPb.Message? first = null;
        try
        {
            foreach (var m in messages)
            {
                await LengthPrefixed.WriteAsync(stream.Output, m.ToByteArray(), CancellationToken.None);
                if (first is null)
                {
                    var bytes = await LengthPrefixed.ReadAsync(stream.Input, 8192, "test", CancellationToken.None);
                    first = bytes is null ? null : AutoNatPb.Message.Parser.ParseFrom(bytes);
                    if (first is null)
                    {
                        return null;
                    }
                }
            }
            var more = await LengthPrefixed.ReadAsync(stream.Input, 8192, "test", CancellationToken.None);
            Assert.That(more, Is.Null, "nothing after the violation");
        }
        catch (Exception e) when (Failures.Classify(e, CancellationToken.None).Kind == FailureKind.PeerGone)
        {
            // reset by the server
        }
        return first;
    }
}
