using System.Buffers;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Multistream;
using Potluck.Protocol.Noise;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Transport;
using Potluck.Protocol.Transport.Memory;
using Potluck.Protocol.Yamux;

namespace Potluck.Protocol.Tests.Host;

/// <summary>
/// The upgrader alone, on raw simulated connections with 10 ms each way: what goes on the wire and how many flights an
/// upgrade takes are part of interoperability, so they are pinned here exactly.
/// </summary>
public class ConnectionUpgraderTests
{
    private static readonly TimeSpan OneWay = TimeSpan.FromMilliseconds(10);

    [Test]
    public void Dialer_SendsTheLazySecurityProposalWithTheFirstNoiseMessage_InOneFlight() => VirtualTimeDriver.Run(async d =>
    {
        var (network, dialerRaw, listenerRaw) = await ConnectRawAsync(d);
        var dialer = Upgrader(d, PrivateKey.FromRandom(new Random(1)), earlyMuxers: true);

        var upgrade = dialer.UpgradeAsync(dialerRaw, Direction.Outbound, null, 1, CancellationToken.None);
        var first = await listenerRaw.Input.ReadAsync();
        var bytes = first.Buffer.ToArray();
        listenerRaw.Input.AdvanceTo(first.Buffer.End);

        // varint 19 "/multistream/1.0.0\n", varint 7 "/noise\n", then Noise message 1: a 2-byte length and the 32-byte
        // ephemeral key, all in the first flight (the dialer does not wait for the listener's echo).
        var expected = new List<byte> { 19 };
        expected.AddRange("/multistream/1.0.0\n"u8.ToArray());
        expected.Add(7);
        expected.AddRange("/noise\n"u8.ToArray());
        expected.AddRange(new byte[] { 0, 32 });
        Assert.That(bytes, Has.Length.EqualTo(expected.Count + 32));
        Assert.That(bytes[..expected.Count], Is.EqualTo(expected.ToArray()));
        Assert.That(d.Clock.Elapsed, Is.EqualTo(OneWay));

        // Nobody answers: the listener hangs up, and the dialer's upgrade ends with the peer gone.
        await listenerRaw.DisposeAsync();
        await AsyncAssert.ThrowsAsync<PeerGoneException>(() => upgrade);
        await dialerRaw.DisposeAsync();
        Assert.That(network.ConnectionCount, Is.Zero);
    });

    [TestCase(true, 20, 30, TestName = "Upgrade_WithEarlyMuxersOnBothSides_TakesTwoFlightsForTheDialer")]
    [TestCase(false, 40, 30, TestName = "Upgrade_WithoutEarlyMuxers_NegotiatesYamuxAfterNoise")]
    public void Upgrade_BothSides_ProvesIdentities_AndCarriesAStream(bool earlyMuxers, int dialerDoneMs, int listenerDoneMs) =>
        VirtualTimeDriver.Run(async d =>
        {
            var (_, dialerRaw, listenerRaw) = await ConnectRawAsync(d);
            var dialerKey = PrivateKey.FromRandom(new Random(1));
            var listenerKey = PrivateKey.FromRandom(new Random(2));
            var dialer = Upgrader(d, dialerKey, earlyMuxers);
            var listener = Upgrader(d, listenerKey, earlyMuxers: true);

            var dialed = Timed(d, dialer.UpgradeAsync(dialerRaw, Direction.Outbound, listenerKey.PeerId, 1, CancellationToken.None));
            var accepted = Timed(d, listener.UpgradeAsync(listenerRaw, Direction.Inbound, null, 1, CancellationToken.None));
            var (outbound, dialerDone) = await dialed;
            var (inbound, listenerDone) = await accepted;

            Assert.That(outbound.RemotePeer, Is.EqualTo(listenerKey.PeerId));
            Assert.That(inbound.RemotePeer, Is.EqualTo(dialerKey.PeerId));
            Assert.That(dialerDone, Is.EqualTo(TimeSpan.FromMilliseconds(dialerDoneMs)));
            Assert.That(listenerDone, Is.EqualTo(TimeSpan.FromMilliseconds(listenerDoneMs)));

            var stream = await outbound.Muxed.OpenStreamAsync(CancellationToken.None);
            await stream.Output.WriteAsync("over yamux over noise"u8.ToArray());
            var remote = await inbound.Muxed.AcceptStreamAsync(CancellationToken.None);
            var read = await remote.Input.ReadAtLeastAsync(21);
            Assert.That(read.Buffer.ToArray(), Is.EqualTo("over yamux over noise"u8.ToArray()));
            remote.Input.AdvanceTo(read.Buffer.End);

            await outbound.CloseAsync();
            await inbound.CloseAsync();
        });

    [Test]
    public void Upgrade_RemoteIsAnotherPeer_FailsWithAWrongPeerViolationOfTheConnection() => VirtualTimeDriver.Run(async d =>
    {
        var (_, dialerRaw, listenerRaw) = await ConnectRawAsync(d);
        var listenerKey = PrivateKey.FromRandom(new Random(2));
        var dialer = Upgrader(d, PrivateKey.FromRandom(new Random(1)), earlyMuxers: true);
        var listener = Upgrader(d, listenerKey, earlyMuxers: true);
        var someoneElse = PrivateKey.FromRandom(new Random(3)).PeerId;

        var accepting = listener.UpgradeAsync(listenerRaw, Direction.Inbound, null, 1, CancellationToken.None);
        var e = await AsyncAssert.ThrowsAsync<ProtocolViolationException>(() =>
            dialer.UpgradeAsync(dialerRaw, Direction.Outbound, someoneElse, 1, CancellationToken.None));

        Assert.That(e.Code, Is.EqualTo(ViolationCode.WrongPeer));
        Assert.That(e.Radius, Is.EqualTo(BlastRadius.Connection));
        await AsyncAssert.ThrowsAsync<PeerGoneException>(() => accepting);
    });

    private static ConnectionUpgrader Upgrader(VirtualTimeDriver d, PrivateKey key, bool earlyMuxers)
    {
        var runtime = d.CreateRuntime(seed: key.PublicKey.Data[0]);
        var muxers = earlyMuxers ? new[] { YamuxMuxer.ProtocolId } : [];
        var security = new NoiseSecurity(key, new NoiseOptions { EarlyMuxers = muxers }, runtime, NullLoggerFactory.Instance);
        var muxer = new YamuxMuxer(new YamuxOptions { MeasureRttOnStart = false }, runtime, NullLoggerFactory.Instance);
        return new ConnectionUpgrader(security, muxer, null, MultistreamOptions.Default, muxers, runtime, NullLogger.Instance);
    }

    private static async Task<(SimulatedNetwork Network, IRawConnection Dialer, IRawConnection Listener)> ConnectRawAsync(VirtualTimeDriver d)
    {
        var network = new SimulatedNetwork(d.Clock, pipes: d.Loop.PipeScheduler);
        var listening = await network.CreateTransport().ListenAsync(Multiaddr.Parse("/memory/0"), CancellationToken.None);
        network.SetEndpoint(listening.Address, new LinkConditions { Latency = OneWay });
        var dialer = await network.CreateTransport().DialAsync(listening.Address, CancellationToken.None);
        var listener = await listening.AcceptAsync(CancellationToken.None);
        return (network, dialer, listener);
    }

    private static async Task<(T Result, TimeSpan At)> Timed<T>(VirtualTimeDriver d, Task<T> task)
    {
        var result = await task;
        return (result, d.Clock.Elapsed);
    }
}
