using System.Net;
using Google.Protobuf;
using Potluck.Protocol.Dcutr;
using Potluck.Protocol.Identify;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Protocol.Runtime;
using Potluck.Protocol.Tests.Host;
using DcutrPb = Potluck.Protocol.Dcutr.Pb;

namespace Potluck.Protocol.Tests.Dcutr;

/// <summary>
/// Port prediction (the "birthday" punch against port-changing NATs): the pure rules, and what a DCUtR round plans to
/// dial for each pair of mappings, within the per-round count and the node's budget. The NAT lab
/// (scripts/natlab/run.sh) measures it against real NATs.
/// </summary>
public class PortPredictionTests
{
    private static Multiaddr Tcp(string ip, int port) => Multiaddr.Parse($"/ip4/{ip}/tcp/{port}");

    [Test]
    public void PortPreserved_ComparesTheObservedPortWithTheConnectionsLocalPort()
    {
        Assert.That(PortPrediction.PortPreserved(Tcp("198.51.100.11", 40000), Tcp("10.1.0.2", 40000)), Is.True);
        Assert.That(PortPrediction.PortPreserved(Tcp("198.51.100.11", 51234), Tcp("10.1.0.2", 40000)), Is.False);
        Assert.That(PortPrediction.PortPreserved(null, Tcp("10.1.0.2", 40000)), Is.Null);
        Assert.That(PortPrediction.PortPreserved(Tcp("198.51.100.11", 40000), null), Is.Null);
        Assert.That(PortPrediction.PortPreserved(Tcp("127.0.0.1", 40000), Tcp("127.0.0.1", 1)), Is.Null, "loopback says nothing about a NAT");
        Assert.That(PortPrediction.PortPreserved(Multiaddr.Parse("/memory/7"), Multiaddr.Parse("/memory/8")), Is.Null);
        Assert.That(PortPrediction.PortPreserved(Multiaddr.Parse("/ip4/198.51.100.2/tcp/4100/p2p-circuit"), Tcp("10.1.0.2", 4100)), Is.Null);
    }

    [Test]
    public void Classify_TakesTheMajority_AndATieOrNothingIsUnknown()
    {
        Assert.That(PortPrediction.Classify([]), Is.EqualTo(PortMapping.Unknown));
        Assert.That(PortPrediction.Classify([true]), Is.EqualTo(PortMapping.Preserving));
        Assert.That(PortPrediction.Classify([false, false, true]), Is.EqualTo(PortMapping.Changing));
        Assert.That(PortPrediction.Classify([false, true]), Is.EqualTo(PortMapping.Unknown));
    }

    [Test]
    public void RoleFor_SpraysOnlyWhenAKeepingSideMeetsAChangingOne()
    {
        Assert.That(PortPrediction.RoleFor(PortMapping.Preserving, PortMapping.Changing), Is.EqualTo(PredictionRole.Spray));
        Assert.That(PortPrediction.RoleFor(PortMapping.Changing, PortMapping.Preserving), Is.EqualTo(PredictionRole.FreshPorts));
        Assert.That(PortPrediction.RoleFor(PortMapping.Changing, PortMapping.Changing), Is.EqualTo(PredictionRole.None), "two unknown ports: it cannot help");
        Assert.That(PortPrediction.RoleFor(PortMapping.Preserving, PortMapping.Preserving), Is.EqualTo(PredictionRole.None), "plain DCUtR suffices");
        Assert.That(PortPrediction.RoleFor(PortMapping.Preserving, PortMapping.Unknown), Is.EqualTo(PredictionRole.None), "a js or go peer says nothing");
        Assert.That(PortPrediction.RoleFor(PortMapping.Unknown, PortMapping.Changing), Is.EqualTo(PredictionRole.None));
    }

    [Test]
    [Category("Adversarial")]
    public void FromWire_AnyValueButTheTwoKnownOnes_IsUnknown()
    {
        Assert.That(PortPrediction.FromWire(false, 2), Is.EqualTo(PortMapping.Unknown));
        Assert.That(PortPrediction.FromWire(true, 1), Is.EqualTo(PortMapping.Preserving));
        Assert.That(PortPrediction.FromWire(true, 2), Is.EqualTo(PortMapping.Changing));
        foreach (var hostile in new uint[] { 0, 3, 1000, uint.MaxValue })
        {
            Assert.That(PortPrediction.FromWire(true, hostile), Is.EqualTo(PortMapping.Unknown), $"{hostile}");
        }
    }

    [Test]
    public void TheExtensionField_RoundTrips_AndAMessageWithoutItDecodesAsUnknown()
    {
        var sent = new DcutrPb.HolePunch { Type = DcutrPb.HolePunch.Types.Type.Connect, PotluckPortMapping = 2 };
        var back = DcutrPb.HolePunch.Parser.ParseFrom(sent.ToByteArray());
        Assert.That(PortPrediction.FromWire(back.HasPotluckPortMapping, back.PotluckPortMapping), Is.EqualTo(PortMapping.Changing));
        var plain = DcutrPb.HolePunch.Parser.ParseFrom(new DcutrPb.HolePunch { Type = DcutrPb.HolePunch.Types.Type.Sync }.ToByteArray());
        Assert.That(PortPrediction.FromWire(plain.HasPotluckPortMapping, plain.PotluckPortMapping), Is.EqualTo(PortMapping.Unknown));
    }

    [Test]
    public void PickPorts_AreDistinct_InTheNatRange_AvoidTheExcluded_AndRepeatForASeed()
    {
        var exclude = new HashSet<int> { 4100, 50000 };
        var ports = PortPrediction.PickPorts(new Random(7), 4000, exclude);
        Assert.That(ports, Has.Length.EqualTo(4000));
        Assert.That(ports.Distinct().Count(), Is.EqualTo(4000));
        Assert.That(ports.All(p => p is >= PortPrediction.FirstPort and <= PortPrediction.LastPort), Is.True);
        Assert.That(ports.Intersect(exclude), Is.Empty);
        Assert.That(PortPrediction.PickPorts(new Random(7), 4000, exclude), Is.EqualTo(ports));
        Assert.That(PortPrediction.PickPorts(new Random(7), 100_000, new HashSet<int>()), Has.Length.EqualTo(64512), "never more than the range");
    }

    [Test]
    public void SocketBudget_CapsEveryCallerTogether_AndRefillsAfterTheWindow()
    {
        var budget = new SocketBudget(500, TimeSpan.FromMinutes(1));
        var t0 = DateTimeOffset.UnixEpoch;
        Assert.That(budget.Take(256, t0), Is.EqualTo(256));
        Assert.That(budget.Take(256, t0.AddSeconds(10)), Is.EqualTo(244));
        Assert.That(budget.Take(256, t0.AddSeconds(20)), Is.Zero);
        Assert.That(budget.Take(-5, t0.AddSeconds(20)), Is.Zero);
        Assert.That(budget.Take(256, t0.AddMinutes(1)), Is.EqualTo(256));
    }

    [Test]
    [Category("Adversarial")]
    public void AThousandObservers_LeaveTheNewest64_InA64SlotQueueAndA71SlotTable_AndTheAgreedAddressStands()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            var node = await hosts.StartAsync();
            await using var dcutr = new DcutrService(node.Host, node.Identify, new DcutrOptions(), node.Runtime, hosts.Loggers);
            var observed = Multiaddr.Parse("/ip4/203.0.113.7/tcp/4001");
            var random = new Random(21);
            var observers = new List<PeerId>();
            for (var i = 0; i < 1_000; i++)
            {
                var peer = PrivateKey.FromRandom(random).PeerId;
                observers.Add(peer);
                // Made-up observers each claim their own address, save the last two, which agree.
                var claim = i >= 998 ? observed : Multiaddr.Parse($"/ip4/198.51.{i / 250}.{i % 250}/tcp/4001");
                dcutr.OnIdentified(new IdentifyResult(peer, null, null, [], [], claim));
            }

            Assert.That(dcutr.ObserverTables, Is.EqualTo((64, 64, 71)), "64 observers; before, 128 queue slots and 89 table slots");
            Assert.That(dcutr.OwnAddresses(null), Does.Contain(observed), "two agreeing observers among the newest");
            await Task.CompletedTask;
        });
    }

    [Test]
    [Category("Adversarial")]
    public void APeerClaimingAChangingMapping_GetsAtMostTheRoundsSockets_OnlyAtItsOwnIp_AndNeverMoreThanTheBudget()
    {
        VirtualTimeDriver.Run(async d =>
        {
            await using var hosts = new TestHosts(d);
            var node = await hosts.StartAsync();
            await using var dcutr = new DcutrService(node.Host, node.Identify,
                new DcutrOptions { PortPredictionSockets = 300, PortPredictionBudget = 700 }, node.Runtime, hosts.Loggers);
            dcutr.ObservePort(true);
            dcutr.ObservePort(true);
            Assert.That(dcutr.Mapping, Is.EqualTo(PortMapping.Preserving));
            Multiaddr[] theirs = [Tcp("203.0.113.9", 40000), Tcp("203.0.113.9", 4100), Tcp("192.0.2.1", 80)];

            var first = dcutr.PlanDials(theirs, PortMapping.Preserving, PortMapping.Changing);
            var predicted = first.Where(p => p.Predicted).ToArray();
            Assert.That(first.Where(p => !p.Predicted).Select(p => p.Address), Is.EqualTo(theirs), "every address sent is still dialed once");
            Assert.That(predicted, Has.Length.EqualTo(300));
            Assert.That(predicted.All(p => p.FromListenPort && p.Address.ToTcpEndPoint()!.Address.Equals(IPAddress.Parse("203.0.113.9"))), Is.True,
                "SYNs leave from the listen port, to the first address's IP only");
            Assert.That(predicted.Select(p => p.Address.ToTcpEndPoint()!.Port).Distinct().Count(), Is.EqualTo(300));
            Assert.That(predicted.Select(p => p.Address.ToTcpEndPoint()!.Port), Has.None.EqualTo(40000).And.None.EqualTo(4100));

            Assert.That(dcutr.PlanDials(theirs, PortMapping.Preserving, PortMapping.Changing).Count(p => p.Predicted), Is.EqualTo(300));
            Assert.That(dcutr.PlanDials(theirs, PortMapping.Preserving, PortMapping.Changing).Count(p => p.Predicted), Is.EqualTo(100), "the budget's rest");
            Assert.That(dcutr.PlanDials(theirs, PortMapping.Preserving, PortMapping.Changing).Count(p => p.Predicted), Is.Zero, "spent for the window");
            await Task.Delay(new DcutrOptions().RateWindow, d.Clock);
            var fresh = dcutr.PlanDials(theirs, PortMapping.Changing, PortMapping.Preserving).Where(p => p.Predicted).ToArray();
            Assert.That(fresh, Has.Length.EqualTo(300));
            Assert.That(fresh.All(p => !p.FromListenPort && p.Address == theirs[0]), Is.True, "fresh local ports, to the keeping side's first address");
            Assert.That(dcutr.PlanDials(theirs, PortMapping.Changing, PortMapping.Changing), Has.Count.EqualTo(theirs.Length), "nothing sprayed where it cannot help");
            Assert.That(dcutr.PlanDials([Multiaddr.Parse("/memory/9")], PortMapping.Preserving, PortMapping.Changing), Has.Count.EqualTo(1), "no TCP address, nothing to predict");
        });
    }

    [Test]
    public void PortPredictionOptions_OutOfRange_AreReportedWithTheirKeys()
    {
        var problems = new DcutrOptions { PortPredictionSockets = 5000, PortPredictionBudget = -1, PortPredictionDelay = TimeSpan.FromMinutes(2) }.Validate();
        Assert.That(problems, Has.Some.StartsWith("'dcutr:portPredictionSockets' is 5000"));
        Assert.That(problems, Has.Some.StartsWith("'dcutr:portPredictionBudget' is -1"));
        Assert.That(problems, Has.Some.StartsWith("'dcutr:portPredictionDelay' is 120 s"));
        Assert.That(new DcutrOptions { PortPredictionSockets = 0 }.Validate(), Is.Empty, "0 turns it off");
    }
}
