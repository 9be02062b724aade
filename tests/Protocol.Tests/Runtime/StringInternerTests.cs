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
