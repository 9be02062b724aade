using System.Reflection;
using System.Runtime.CompilerServices;
using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Kademlia;

namespace Potluck.Protocol.Tests;

/// <summary>
/// Records a node keeps for every peer in a bucket or a mesh, by the bytes of their fields (8 for a reference, the
/// value's size otherwise; an object is 16 bytes of header and these, rounded up to 8): a Kademlia routing-table entry
/// keeps no time (its place in the bucket's list is its recency), gossipsub's per-topic score record keeps its graft
/// time as ticks. Their behaviour is pinned by the routing-table and peer-score tests.
/// </summary>
public class PerPeerRecordSizeTests
{
    [Test]
    public void ARoutingTableEntry_IsItsPeer_ItsKey_AndItsBucket_64BytesAnObject()
    {
        var entry = typeof(RoutingTable).GetNestedType("Entry", BindingFlags.NonPublic)!;
        Assert.Multiple(() =>
        {
            Assert.That(FieldTypes(entry), Does.Not.Contain(typeof(DateTimeOffset)), "a last-seen time nothing reads");
            Assert.That(ObjectBytes(entry), Is.EqualTo(64)); // 80 with the time
        });
    }

    [Test]
    public void APeersScoreRecordInATopic_Is80BytesAnObject_ItsGraftTimeInTicks()
    {
        var stats = typeof(PeerScore).GetNestedType("TopicStats", BindingFlags.NonPublic)!;
        Assert.Multiple(() =>
        {
            Assert.That(FieldTypes(stats), Does.Not.Contain(typeof(DateTimeOffset)));
            Assert.That(ObjectBytes(stats), Is.EqualTo(80)); // 88 with a DateTimeOffset
        });
    }

    private static Type[] FieldTypes(Type type) =>
        type.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic).Select(f => f.FieldType).ToArray();

    private static int ObjectBytes(Type type)
    {
        var payload = FieldTypes(type).Sum(t => t.IsValueType
            ? (int)typeof(Unsafe).GetMethod(nameof(Unsafe.SizeOf))!.MakeGenericMethod(t).Invoke(null, null)!
            : IntPtr.Size);
        return 16 + (payload + 7) / 8 * 8;
    }
}
