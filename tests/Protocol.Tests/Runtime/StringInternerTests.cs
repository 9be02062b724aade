using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Tests.Runtime;

public class StringInternerTests
{
    [Test]
    public void Intern_EqualStrings_ReturnsTheFirstInstance()
    {
        var interner = new StringInterner(4);
        var first = new string("/meshsub/1.2.0".AsSpan());
        var second = new string("/meshsub/1.2.0".AsSpan());
        Assert.That(second, Is.Not.SameAs(first));

        Assert.That(interner.Intern(first), Is.SameAs(first));
        Assert.That(interner.Intern(second), Is.SameAs(first));
        Assert.That(interner.InternOrNull(null), Is.Null);
        Assert.That(interner.InternAll([new string("/meshsub/1.2.0".AsSpan()), "/ipfs/id/1.0.0"]), Has.Exactly(1).SameAs(first));
    }

    /// <summary>A remote that sends fresh names forever cannot grow the table past its capacity; names beyond it come back as sent.</summary>
    [Test]
    public void Intern_BeyondCapacity_KeepsNothingMoreAndReturnsTheStringAsGiven()
    {
        var interner = new StringInterner(3);
        for (var i = 0; i < 1000; i++)
        {
            var s = $"/junk/{i}";
            Assert.That(interner.Intern(s), Is.SameAs(s));
        }
        Assert.That(interner.Count, Is.EqualTo(3));
        var kept = interner.Intern(new string("/junk/1".AsSpan()));
        Assert.That(kept, Is.EqualTo("/junk/1"));
        var fresh = new string("/junk/500".AsSpan());
        Assert.That(interner.Intern(fresh), Is.SameAs(fresh), "not kept: returned as given");
    }
}

public class StringListInternerTests
{
    private static string[] Copy(params string[] strings) => strings.Select(s => new string(s.AsSpan())).ToArray();

    [Test]
    public void Intern_EqualLists_ReturnsTheFirstArray_OtherOrdersAndLengthsStayApart()
    {
        var interner = new StringListInterner(8);
        var first = Copy("/ipfs/id/1.0.0", "/meshsub/1.2.0", "/ipfs/kad/1.0.0");

        Assert.That(interner.Intern(first), Is.SameAs(first));
        Assert.That(interner.Intern(Copy("/ipfs/id/1.0.0", "/meshsub/1.2.0", "/ipfs/kad/1.0.0")), Is.SameAs(first));
        var reordered = Copy("/meshsub/1.2.0", "/ipfs/id/1.0.0", "/ipfs/kad/1.0.0");
        Assert.That(interner.Intern(reordered), Is.SameAs(reordered), "the same strings in another order: another list");
        var shorter = Copy("/ipfs/id/1.0.0", "/meshsub/1.2.0");
        Assert.That(interner.Intern(shorter), Is.SameAs(shorter));
        Assert.That(interner.Intern([]), Is.Empty);
        Assert.That(interner.Count, Is.EqualTo(3), "the empty list is not kept");
    }

    /// <summary>A remote that sends a fresh list every time cannot grow the table past its capacity.</summary>
    [Test]
    [Category("Adversarial")]
    public void Intern_BeyondCapacity_KeepsNothingMoreAndReturnsTheListAsGiven()
    {
        var interner = new StringListInterner(2);
        for (var i = 0; i < 1000; i++)
        {
            var list = new[] { "/ipfs/id/1.0.0", $"/junk/{i}" };
            Assert.That(interner.Intern(list), Is.SameAs(list));
        }
        Assert.That(interner.Count, Is.EqualTo(2));
        var kept = interner.Intern(new[] { "/ipfs/id/1.0.0", "/junk/1" });
        Assert.That(kept, Is.EqualTo(new[] { "/ipfs/id/1.0.0", "/junk/1" }));
        Assert.That(interner.Intern(new[] { "/ipfs/id/1.0.0", "/junk/0" }), Is.Not.SameAs(kept));
    }
}
