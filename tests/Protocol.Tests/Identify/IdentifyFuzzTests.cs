using System.Buffers;
using Google.Protobuf;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Identify;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Tests.Host;

namespace Potluck.Protocol.Tests.Identify;

public class IdentifyFuzzTests
{
    /// <summary>
    /// Random and mutated identify-push messages (framed and unframed, some over the size limit) reset only
    /// their stream: the receiving host keeps its connection, its peer record and its other protocols.
    /// </summary>
    [Test]
    public void RandomAndMutatedPushes_ResetTheStreamOnly_HostKeepsServing() => VirtualTimeDriver.Run(async d =>
    {
        var ct = CancellationToken.None; // the driver fails a run that hangs
        await using var hosts = new TestHosts(d, seed: 11);
        var a = await hosts.StartAsync();
        // Sixty malformed pushes would get a banned by b's misbehaviour score (PeerBudgetsTests covers that); here the
        // threshold is out of reach, so what is tested is that each one resets only its stream.
        var b = await hosts.StartAsync(o => o with { Budgets = o.Budgets with { BanThreshold = 1e9 } });
        await a.Host.ConnectAsync(b.Address, ct);
        await b.Identify.WhenIdentifiedAsync(a.Host.PeerId, ct);
        var valid = a.Identify.BuildMessage(b.Host.ListenAddresses[0]).ToByteArray();
        var random = new Random(42);

        for (var i = 0; i < 60; i++)
        {
            byte[] body;
            switch (i % 3)
            {
                case 0:
                    body = new byte[random.Next(0, 300)];
                    random.NextBytes(body);
                    break;
                case 1:
                    body = (byte[])valid.Clone();
                    for (var flips = random.Next(1, 6); flips > 0; flips--)
                    {
                        body[random.Next(body.Length)] ^= (byte)(1 << random.Next(8));
                    }
                    break;
                default:
                    body = new byte[random.Next(70_000, 80_000)]; // over the 64 KiB limit
                    break;
            }
            await using var stream = await a.Host.NewStreamAsync(b.Host.PeerId, [IdentifyService.PushProtocolId], ct);
            if (i % 2 == 0)
            {
                LengthPrefixed.Write(stream.Output, body);
            }
            else
            {
                stream.Output.Write(body);
            }
            await stream.Output.FlushAsync(ct);
            await stream.Output.CompleteAsync();
            try
            {
                while (true)
                {
                    var r = await stream.Input.ReadAsync(ct);
                    stream.Input.AdvanceTo(r.Buffer.End);
                    if (r.IsCompleted)
                    {
                        break;
                    }
                }
            }
            catch (IOException)
            {
                // reset by b: expected for malformed input
            }
        }

        Assert.That(b.Host.Connections, Has.Count.EqualTo(1));
        Assert.That(b.Host.Peers.GetPublicKey(a.Host.PeerId), Is.EqualTo(a.Host.PublicKey), "a forged key must never replace the real one");
        Assert.That(await b.Ping.PingAsync(a.Host.PeerId, 1, ct), Has.Count.EqualTo(1));
    });
}
